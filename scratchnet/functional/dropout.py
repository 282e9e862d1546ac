"""(being written by the functional-ops helper)"""
def dropout(*a, **k): raise NotImplementedError
