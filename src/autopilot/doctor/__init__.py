"""`autopilot doctor`: probes, checks with a fix each, and the report."""
