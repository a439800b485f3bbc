"""Small helpers shared by methods, tasks and the CLI (no dependency on :mod:`evssl.methods`)."""

from evssl.utils.hparams import as_config, batch_size_of, class_config, module_hparams_without_modules, save_hparams

__all__ = ["as_config", "batch_size_of", "class_config", "module_hparams_without_modules", "save_hparams"]
