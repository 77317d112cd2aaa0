"""Network cards: MAC addresses and the host-side backends of ethN."""
