"""Starting an `infermesh` server for a Python test suite: the process runs with its stderr in
a log file, its first stdout line (where every server prints the addresses it bound) is read
within a deadline, and the process is stopped when the `with` block ends."""
import contextlib
import subprocess
import threading


@contextlib.contextmanager
def started(cmd, log_path, timeout_s):
    """Yields the first line `cmd` prints (None when it prints none within `timeout_s`)."""
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        first = []
        reader = threading.Thread(target=lambda: first.append(proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout_s)
        yield (first[0] if first else None) or None
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()
