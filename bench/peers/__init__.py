"""Peers timed beside the engine in `cpm bench engine`: the strongest pure-PyTorch decoders we know of."""
