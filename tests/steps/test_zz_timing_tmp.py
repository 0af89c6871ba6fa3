import time, collections
from tests.steps.test_s3 import *  # noqa
from tests.steps.conftest import *  # noqa

def test_timing(lab, capsys):
    stats = collections.defaultdict(float); counts = collections.Counter(); starts = {}
    def before(model, **kw):
        starts[threading.get_ident()] = time.perf_counter()
    def after(model, **kw):
        op = model.name
        stats[op] += time.perf_counter() - starts.pop(threading.get_ident()); counts[op] += 1
    import threading
    lab.ctx.session.events.register("before-call.*.*", before)
    lab.ctx.session.events.register("after-call.*.*", after)
    t = time.perf_counter()
    assert_lifecycle(lab, "s3", set())
    total = time.perf_counter() - t
    with capsys.disabled():
        print("\ntotal", round(total, 2))
        for op, s in sorted(stats.items(), key=lambda x: -x[1])[:12]:
            print(op, counts[op], round(s, 3))
