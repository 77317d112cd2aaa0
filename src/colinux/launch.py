"""The ``colinux`` command's entry point, with a fast path for ``exec`` and ``shell``.

``colinux.cli`` imports the whole of colinux (the daemon, the configuration
readers, asyncio), which takes longer than ``colinux exec`` may in all. The
two verbs that talk to a running guest's agent are sent to their lean client
before any of that is imported; everything else goes to ``cli``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import NoReturn


def colinux_main(argv: Sequence[str] | None = None) -> NoReturn:
    words = list(sys.argv[1:] if argv is None else argv)
    if words[:1] in (["exec"], ["shell"]):
        from colinux.console.exec_client import exec_main

        exec_main(words)
    from colinux.cli import colinux_main as main

    main(words)
