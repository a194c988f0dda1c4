"""Landlock + seccomp confinement of the calling process, by direct system calls.

The "landlock" sandbox backend's in-sandbox half. zygote.py loads this file by
path and applies `confine` to the program spawner between fork and exec, so
the spawner and every program it forks inherit it, while the trusted server
and HumanEval judge stay outside. Standard library only, like zygote.py; no
binding package is needed (the calls are four syscalls and one prctl).

Run as a script (`python -I -S confine.py SPEC`) it is the host's probe: it
confines itself and exits 0 only if writing outside the allowed directory,
opening an IPv4 socket and ptrace all fail, and a confined interpreter starts.

SPEC (JSON): {"read": [paths], "list": [paths], "write": [paths], "devices":
[paths]}: files and directories readable and executable (beneath),
directories listable (beneath, names only), directories with every right
beneath, device files readable and writable. Nothing else in the filesystem
can be opened.
"""

import ctypes
import errno
import json
import os
import platform
import struct
import sys

_ARCH = {
    # AUDIT_ARCH value, and the numbers of the calls the filter names.
    "x86_64": (0xC000003E, {"socket": 41, "ptrace": 101,
                            "process_vm_readv": 310, "process_vm_writev": 311}),
    "aarch64": (0xC00000B7, {"socket": 198, "ptrace": 117,
                             "process_vm_readv": 270, "process_vm_writev": 271}),
}
# Numbered alike on every architecture (added after the tables were unified).
_IO_URING = (425, 426, 427)  # io_uring opens sockets without socket()
_PIDFD_GETFD = 438  # copies another process's descriptors
_LANDLOCK_CREATE_RULESET, _LANDLOCK_ADD_RULE, _LANDLOCK_RESTRICT_SELF = 444, 445, 446

_FS_EXECUTE, _FS_WRITE_FILE, _FS_READ_FILE, _FS_READ_DIR = 1, 2, 4, 8
_FS_TRUNCATE, _FS_IOCTL_DEV = 1 << 14, 1 << 15
_FILE_RIGHTS = _FS_EXECUTE | _FS_WRITE_FILE | _FS_READ_FILE | _FS_TRUNCATE | _FS_IOCTL_DEV
_NET_BIND_TCP, _NET_CONNECT_TCP = 1, 2
_SCOPE_ABSTRACT_UNIX_SOCKET, _SCOPE_SIGNAL = 1, 2

_PR_SET_NO_NEW_PRIVS, _PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 38, 22, 2
_RET_KILL_PROCESS, _RET_ERRNO, _RET_ALLOW = 0x80000000, 0x00050000, 0x7FFF0000
_LD_W_ABS, _JEQ_K, _JGE_K, _RET_K = 0x20, 0x15, 0x35, 0x06
_X32_BIT = 0x40000000
_AF_UNIX = 1

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _call(nr, *args):
  result = _libc.syscall(ctypes.c_long(nr), *args)
  if result < 0:
    err = ctypes.get_errno()
    raise OSError(err, f"syscall {nr}: {os.strerror(err)}")
  return result


def landlock_abi():
  """The kernel's Landlock ABI version; 0 if it has none or it is disabled."""
  try:
    return _call(_LANDLOCK_CREATE_RULESET, None, ctypes.c_size_t(0),
                 ctypes.c_uint32(1))  # LANDLOCK_CREATE_RULESET_VERSION
  except OSError:
    return 0


def _fs_rights(abi):
  # ABI 1 knows 13 rights, 2 adds REFER, 3 TRUNCATE, 5 IOCTL_DEV.
  return (1 << {1: 13, 2: 14, 3: 15, 4: 15}.get(abi, 16)) - 1


def _landlock(spec, abi):
  handled = _fs_rights(abi)
  attr = struct.pack("<QQQ", handled,
                     _NET_BIND_TCP | _NET_CONNECT_TCP if abi >= 4 else 0,
                     _SCOPE_ABSTRACT_UNIX_SOCKET | _SCOPE_SIGNAL if abi >= 6 else 0)
  size = 8 if abi < 4 else 16 if abi < 6 else 24
  buf = ctypes.create_string_buffer(attr[:size], size)
  ruleset = _call(_LANDLOCK_CREATE_RULESET, buf, ctypes.c_size_t(size),
                  ctypes.c_uint32(0))
  read_dir = _FS_EXECUTE | _FS_READ_FILE | _FS_READ_DIR
  device = _FS_READ_FILE | _FS_WRITE_FILE | _FS_TRUNCATE | _FS_IOCTL_DEV
  try:
    for paths, rights in ((spec["read"], read_dir), (spec["list"], _FS_READ_DIR),
                          (spec["write"], handled), (spec["devices"], device)):
      for path in paths:
        _add_rule(ruleset, path, rights & handled)
    _call(_LANDLOCK_RESTRICT_SELF, ctypes.c_int(ruleset), ctypes.c_uint32(0))
  finally:
    os.close(ruleset)


def _add_rule(ruleset, path, rights):
  try:
    fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
  except OSError:
    return  # an optional path (/lib32, /dev/full) this host lacks
  try:
    if not os.path.isdir(path):
      rights &= _FILE_RIGHTS  # the kernel refuses directory rights on a file
    attr = ctypes.create_string_buffer(struct.pack("=Qi", rights, fd), 12)
    _call(_LANDLOCK_ADD_RULE, ctypes.c_int(ruleset), ctypes.c_int(1), attr,
          ctypes.c_uint32(0))  # LANDLOCK_RULE_PATH_BENEATH
  finally:
    os.close(fd)


def seccomp_filter():
  """The BPF program: EPERM for ptrace-like calls and io_uring, EAFNOSUPPORT for
  sockets other than AF_UNIX; other architectures (i386 via int 0x80) are killed."""
  arch, nrs = _ARCH[platform.machine()]

  def op(code, k, jt=0, jf=0):
    return struct.pack("=HBBI", code, jt, jf, k)

  deny = _RET_ERRNO | errno.EPERM
  prog = [op(_LD_W_ABS, 4), op(_JEQ_K, arch, 1, 0), op(_RET_K, _RET_KILL_PROCESS),
          op(_LD_W_ABS, 0)]
  if arch == _ARCH["x86_64"][0]:
    # x32 numbers (bit 30 set) reach the same calls under other numbers.
    prog += [op(_JGE_K, _X32_BIT, 0, 1), op(_RET_K, deny)]
  for nr in (nrs["ptrace"], nrs["process_vm_readv"], nrs["process_vm_writev"],
             _PIDFD_GETFD) + _IO_URING:
    prog += [op(_JEQ_K, nr, 0, 1), op(_RET_K, deny)]
  prog += [op(_JEQ_K, nrs["socket"], 0, 3),
           op(_LD_W_ABS, 16),  # the low 32 bits of args[0], the domain (an int)
           op(_JEQ_K, _AF_UNIX, 1, 0),
           op(_RET_K, _RET_ERRNO | errno.EAFNOSUPPORT),
           op(_RET_K, _RET_ALLOW)]
  return b"".join(prog)


def _seccomp():
  prog = seccomp_filter()
  filt = ctypes.create_string_buffer(prog, len(prog))
  fprog = struct.pack("@HP", len(prog) // 8, ctypes.addressof(filt))  # struct sock_fprog
  if _libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER,
                 ctypes.create_string_buffer(fprog, len(fprog)), 0, 0) != 0:
    err = ctypes.get_errno()
    raise OSError(err, f"seccomp filter: {os.strerror(err)}")


def confine(spec):
  """Irrevocably confines this process and all it will start; raises if it cannot."""
  abi = landlock_abi()
  if abi < 1:
    raise OSError(errno.ENOSYS, "Landlock is not enabled in this kernel")
  # Both need it without CAP_SYS_ADMIN, and no setuid binary may undo them.
  if _libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
    raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
  _landlock(spec, abi)
  _seccomp()


def _probe(spec):
  """Exit status 0 only if confinement works and holds."""
  import socket  # pylint: disable=import-outside-toplevel
  confine(spec)
  outside = os.path.join(os.path.dirname(spec["write"][0]), "restem_probe_escape")
  checks = (lambda: open(outside, "w").close(),
            lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM).close(),
            lambda: _call(_ARCH[platform.machine()][1]["ptrace"], ctypes.c_long(0),
                          ctypes.c_long(os.getppid()), None, None))
  for check in checks:
    try:
      check()
      return 1
    except OSError:
      pass
  # A confined interpreter starts and writes where it may (as the spawner does).
  import subprocess  # pylint: disable=import-outside-toplevel
  ok = os.path.join(spec["write"][0], "ok")
  return subprocess.run([sys.executable, "-I", "-S", "-c",
                         f"import json; open({ok!r}, 'w').write('ok')"]).returncode


if __name__ == "__main__":
  sys.exit(_probe(json.loads(sys.argv[1])))
