"""What the data tests check about the order in which an epoch's batches visit the samples."""


def check_no_repeat_before_all_seen(batches, n_total):
    """Batches in consumption order: no batch holding a repeat before a batch holding a new sample,
    and every sample seen."""
    seen, first_repeat, last_new = set(), None, None
    for i, b in enumerate(batches):
        new = [y for y in b if y not in seen]
        if len(set(b)) < len(b) or len(new) < len(b):
            first_repeat = i if first_repeat is None else first_repeat
        if new:
            last_new = i
        seen.update(b)
    assert len(seen) == n_total, f"saw {len(seen)} of {n_total} samples"
    assert first_repeat is None or last_new <= first_repeat, \
        f"batch {first_repeat} repeats a sample before batch {last_new} shows a new one"
