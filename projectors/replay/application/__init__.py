"""The replay use cases: rebuild (with the swap protocol), verify, inspect."""
