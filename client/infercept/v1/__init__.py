"""Generated gRPC stubs for the ``infercept.v1`` protocol, from proto/ (never edited by hand):
``make proto`` writes them here in a checkout; building the package (client/setup.py) generates its own."""
