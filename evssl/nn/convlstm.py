"""Convolutional LSTM (Shi et al., "Convolutional LSTM Network", NeurIPS 2015, Eq. 3).

Gates from one convolution over ``[x_t, h_{t-1}]``:

    i, f, o = sigmoid(.), g = tanh(.)
    c_t = f * c_{t-1} + i * g
    h_t = o * tanh(c_t)

(the peephole terms of Shi et al. are omitted, as in common implementations). Used by the online-adaptive VO method
(Li et al., CVPR 2020), whose pose/depth networks carry ConvLSTM states across frames; states go in and come out so
that a sequence can be processed in chunks and adapted online.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["ConvLSTM", "ConvLSTMCell", "LSTMState"]

LSTMState = tuple[Tensor, Tensor]  # (h, c), each (B, hidden, H, W)


class ConvLSTMCell(nn.Module):
    """One ConvLSTM step: ``(x_t, (h, c)) -> (h_t, (h_t, c_t))``. ``state=None`` starts from zeros.

    The forget-gate bias is initialised to 1 (Jozefowicz et al. 2015) so that early training keeps the memory.
    """

    def __init__(self, in_ch: int, hidden_ch: int, kernel: int = 3, bias: bool = True) -> None:
        super().__init__()
        if kernel % 2 == 0:
            raise ValueError("kernel must be odd so that the state keeps its size")
        self.in_ch, self.hidden_ch = in_ch, hidden_ch
        self.conv = nn.Conv2d(in_ch + hidden_ch, 4 * hidden_ch, kernel, padding=kernel // 2, bias=bias)
        if bias:
            with torch.no_grad():
                self.conv.bias.zero_()
                self.conv.bias[hidden_ch : 2 * hidden_ch].fill_(1.0)

    def init_state(self, x: Tensor) -> LSTMState:
        """Zero state matching input ``x`` (B, C, H, W)."""
        z = x.new_zeros(x.shape[0], self.hidden_ch, x.shape[-2], x.shape[-1])
        return z, z.clone()

    def forward(self, x: Tensor, state: LSTMState | None = None) -> tuple[Tensor, LSTMState]:
        h, c = self.init_state(x) if state is None else state
        i, f, o, g = self.conv(torch.cat([x, h], dim=1)).chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, (h, c)


class ConvLSTM(nn.Module):
    """Stack of :class:`ConvLSTMCell` layers run over a time dimension.

    ``forward(x, state=None)``: ``x`` is ``(B, T, C, H, W)`` (``batch_first``) or ``(T, B, C, H, W)``; ``state`` a list
    with one ``(h, c)`` per layer (or ``None``). Returns the last layer's outputs ``(B, T, hidden, H, W)`` (same time
    layout as the input) and the list of final states, which can be passed to the next call.
    """

    def __init__(
        self, in_ch: int, hidden_ch: int, kernel: int = 3, num_layers: int = 1, batch_first: bool = True
    ) -> None:
        super().__init__()
        self.batch_first = batch_first
        self.cells = nn.ModuleList(
            ConvLSTMCell(in_ch if i == 0 else hidden_ch, hidden_ch, kernel) for i in range(num_layers)
        )

    def forward(self, x: Tensor, state: list[LSTMState] | None = None) -> tuple[Tensor, list[LSTMState]]:
        if x.ndim != 5:
            raise ValueError(f"ConvLSTM expects a 5-D input, got shape {tuple(x.shape)}")
        if not self.batch_first:
            x = x.transpose(0, 1)
        states: list[LSTMState | None] = list(state) if state is not None else [None] * len(self.cells)
        if len(states) != len(self.cells):
            raise ValueError(f"expected {len(self.cells)} layer states, got {len(states)}")
        seq = list(x.unbind(1))
        new_states: list[LSTMState] = []
        for cell, s in zip(self.cells, states):
            outs = []
            for xt in seq:
                ht, s = cell(xt, s)
                outs.append(ht)
            seq = outs
            new_states.append(s)  # type: ignore[arg-type]
        y = torch.stack(seq, dim=1)
        return (y if self.batch_first else y.transpose(0, 1)), new_states
