"""What a guest's daemon and its clients share, below both: where a guest's run
directory, socket and lock live (``rundir``), the control socket's framing
(``protocol``) and the debug collector's records and filters (``debug``). The
daemon serves them; ``colinux``'s verbs, the consoles and the web console use
them, so neither side imports the other."""
