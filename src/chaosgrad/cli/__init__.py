"""The chaosgrad command."""
def main():
    raise SystemExit("not yet")
