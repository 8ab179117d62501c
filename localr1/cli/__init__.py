"""The command line: click commands and what they print. Calls the core; computes nothing a
second front end would also need."""
