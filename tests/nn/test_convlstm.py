"""ConvLSTM: gate equations by hand, chunked sequences with carried state, gradients."""

from __future__ import annotations

import torch

from evssl.nn.convlstm import ConvLSTM, ConvLSTMCell


def test_cell_matches_equations():
    torch.manual_seed(0)
    cell = ConvLSTMCell(2, 3, kernel=1)
    x, h, c = torch.randn(1, 2, 2, 2), torch.randn(1, 3, 2, 2), torch.randn(1, 3, 2, 2)
    h1, (h1b, c1) = cell(x, (h, c))
    W = cell.conv.weight[:, :, 0, 0]
    z = torch.einsum("oc,bchw->bohw", W, torch.cat([x, h], 1)) + cell.conv.bias.view(1, -1, 1, 1)
    i, f, o, g = z.sigmoid()[:, :3], z.sigmoid()[:, 3:6], z.sigmoid()[:, 6:9], z[:, 9:].tanh()
    c_ref = f * c + i * g
    torch.testing.assert_close(c1, c_ref)
    torch.testing.assert_close(h1, o * c_ref.tanh())
    assert h1 is h1b
    torch.testing.assert_close(cell.conv.bias[3:6], torch.ones(3))  # forget-gate bias 1


def test_sequence_in_chunks_equals_whole_and_time_major():
    torch.manual_seed(0)
    lstm = ConvLSTM(2, 4, kernel=3, num_layers=2)
    x = torch.randn(2, 5, 2, 6, 6)
    y, states = lstm(x)
    assert y.shape == (2, 5, 4, 6, 6) and len(states) == 2
    y1, s1 = lstm(x[:, :3])
    y2, s2 = lstm(x[:, 3:], s1)
    torch.testing.assert_close(torch.cat([y1, y2], 1), y)
    for (a, b), (c, d) in zip(s2, states):
        torch.testing.assert_close(a, c)
        torch.testing.assert_close(b, d)
    lstm_t = ConvLSTM(2, 4, kernel=3, num_layers=2, batch_first=False)
    lstm_t.load_state_dict(lstm.state_dict())
    yt, _ = lstm_t(x.transpose(0, 1))
    torch.testing.assert_close(yt.transpose(0, 1), y)
    y.sum().backward()
    assert all(p.grad is not None for p in lstm.parameters())
