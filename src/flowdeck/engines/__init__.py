"""Workflow engines other than flowdeck's own steps (CWL through cwltool)."""
