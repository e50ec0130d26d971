"""Widgets of the TUI: one per panel."""


def cancel_workers(node, group: str) -> bool:
    """Cancel `node`'s workers of `group` (Esc stops the running generation); True when one was running."""
    running = any(w.group == group and w.is_running for w in node.workers)
    node.workers.cancel_group(node, group)
    return running
