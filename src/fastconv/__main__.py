from ._config import show_config

show_config()
