"""What operators see of a running process: the ids its log lines and errors carry."""
