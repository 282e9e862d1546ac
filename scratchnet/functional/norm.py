"""(being written by the functional-ops helper)"""
def batch_norm(*a, **k): raise NotImplementedError
def local_response_norm(*a, **k): raise NotImplementedError
