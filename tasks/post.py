"""Morning post task."""
