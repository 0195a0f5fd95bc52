"""FastAGI: the protocol (sans I/O), the server, and the scripts it serves."""
