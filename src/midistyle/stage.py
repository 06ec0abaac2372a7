"""Shared entry-point plumbing for the DVC stages in ``stages/``.

A stage script is thin: ``run_stage(main)`` loads ``params.yaml`` once, hands the
validated :class:`~midistyle.config.Params` to ``main`` and turns a
:class:`~midistyle.errors.UserError` into one line on stderr and exit status 1.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from midistyle.config import Params, load_params
from midistyle.errors import UserError


def run_stage(main: Callable[[Params], None], params_path: str | os.PathLike = "params.yaml") -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        params = load_params(Path(params_path))
        main(params)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
