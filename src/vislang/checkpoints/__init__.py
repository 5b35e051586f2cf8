from .hf import load_weights, read_config, read_state_dict, write_checkpoint

__all__ = ["load_weights", "read_config", "read_state_dict", "write_checkpoint"]
