# Importing TransformerLens raises the `transformers` log level to ERROR for the whole process,
# which hides, e.g., `from_pretrained`'s report of weights it filled with random values. The guard
# (see wrapperlens/log_levels.py) puts every other library's log levels back after each
# TransformerLens import; it is installed here, before any submodule imports TransformerLens, and
# costs no import of TransformerLens itself (light entry points such as the CLI stay light).
from wrapperlens.log_levels import install_transformer_lens_guard as _install_guard

_install_guard()
