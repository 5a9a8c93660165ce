"""Advisory file locks that die with their process.

A lock is `fcntl.flock` on a small file that names its holder (pid, host,
start time, purpose). The kernel drops the lock when the holding process
exits, however it exits (SIGKILL included), so a lock is never stale: the
file may stay behind, but nobody holds it. The file is never deleted, so
two processes can never each lock a different file of the same name.
"""

import contextlib
import errno
import fcntl
import json
import os
import socket
import time
from typing import Dict, Iterator, Optional

from absl import logging


class LockedError(RuntimeError):
  """Another process holds the lock."""


def holder(path: str) -> Optional[Dict]:
  """What the lock file at `path` says about its last holder, if anything."""
  try:
    with open(path) as f:
      return json.loads(f.read() or 'null')
  except (OSError, ValueError):
    return None


def describe(info: Optional[Dict]) -> str:
  """'pid 12 on host h since 2026-...' for a holder record."""
  if not info:
    return 'another process'
  since = time.strftime('%Y-%m-%d %H:%M:%S',
                        time.localtime(info.get('time', 0)))
  return (f"pid {info.get('pid')} on host {info.get('host')} since {since}"
          f" ({info.get('purpose', '?')})")


@contextlib.contextmanager
def hold(path: str, purpose: str, wait: bool = False) -> Iterator[None]:
  """Holds an exclusive lock on `path` for the `with` block.

  Args:
    path: the lock file (created, with its folder, if missing).
    purpose: what the holder does, written into the file for others to read.
    wait: block until the lock is free; otherwise fail at once.

  Raises:
    LockedError: `wait` is False and another process holds the lock; the
      message names the holder.
  """
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      if e.errno not in (errno.EWOULDBLOCK, errno.EACCES):
        raise
      if not wait:
        raise LockedError(
            f'{path} is held by {describe(holder(path))}') from None
      logging.info('Waiting for %s, held by %s.', path,
                   describe(holder(path)))
      fcntl.flock(fd, fcntl.LOCK_EX)
    record = json.dumps({'pid': os.getpid(), 'host': socket.gethostname(),
                         'time': time.time(), 'purpose': purpose})
    os.ftruncate(fd, 0)
    os.pwrite(fd, record.encode(), 0)
    yield
  finally:
    os.close(fd)  # Releases the lock.
