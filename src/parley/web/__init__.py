"""The web chat page: Gradio Blocks on the server's own port, calling parley in-process through its facade.

    mount_page(app, parley, server_settings)     # server/app.py: the page at GET /, the API stays where it is

One job per file: mount.py puts the page on the FastAPI app (only the page's own paths reach Gradio, so the API's
404 and 405 answers stay parley's); owner.py gives each browser an owner id in a cookie (its conversations);
page.py lays the page out and wires its events; chat.py streams replies (send, retry, edit, Stop); sidebar.py
lists, opens, renames, deletes and exports stored conversations; persona.py picks, edits and imports personas;
controls.py reads the skill and the advanced options; picker.py lists the models and picks the one new
conversations and the next message go to; view.py renders messages, stats and the header (fences.py
closes a code fence a reply leaves open); header.py keeps the header current while replies stream.

No telemetry and no request outside this server: analytics are off before Gradio is imported, the default
theme's fonts are bundled, server-side rendering (a Node process) is off.
"""

from __future__ import annotations

import os

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"   # before anything imports gradio
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

from parley.web.mount import is_page_path, mount_page  # noqa: E402

__all__ = ["is_page_path", "mount_page"]
