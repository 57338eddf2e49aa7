"""Progress bars that help at the keyboard and stay out of committed notebook outputs.

Bars use ``tqdm.auto`` (a widget in Jupyter, text in a terminal). Set the environment variable
``PDLIB_PROGRESS=0`` to turn every bar off: the book's test run does this so that the outputs
stored in the notebooks do not depend on timing.
"""

from __future__ import annotations

import os


def progress_enabled(requested: bool | None = True) -> bool:
    """Whether a bar should be shown: ``requested`` unless the environment turns bars off."""
    if os.environ.get("PDLIB_PROGRESS", "1").strip().lower() in {"0", "false", "no", "off"}:
        return False
    return bool(requested)


def progress_bar(iterable=None, *, total=None, desc=None, enabled: bool | None = True, **kw):
    """Wrap ``iterable`` in a tqdm bar, or return it unchanged when bars are off."""
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, disable=not progress_enabled(enabled), leave=False, **kw)
