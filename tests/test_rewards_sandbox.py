"""The code sandbox on each backend: limits, kills, clean environment, no network."""

import os
import platform
import socket
import tempfile
import textwrap
import time

from absl.testing import absltest

from restem_jax.rewards import sandbox as sandbox_lib

# Why each isolating backend cannot run here ('' where it can).
_PROBLEMS = {name: sandbox_lib.backend_problem(name) for name in ("bwrap", "landlock")}
_ROOT = os.geteuid() == 0


def _procs_with_arg(marker):
  found = []
  for pid in os.listdir("/proc"):
    if pid.isdigit():
      try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
          if marker.encode() in f.read():
            found.append(pid)
      except OSError:
        pass
  return found


class SandboxTestBase(absltest.TestCase):
  backend = "none"

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.sb = cls.new_sandbox()

  @classmethod
  def new_sandbox(cls):
    return sandbox_lib.Sandbox(backend=cls.backend,
                               allow_unsandboxed=cls.backend == "none")

  @classmethod
  def tearDownClass(cls):
    cls.sb.close()
    super().tearDownClass()

  def run_code(self, code, timeout=5.0, stdin=None):
    return self.sb.run("exec", timeout, code=textwrap.dedent(code), stdin=stdin)

  def test_runs_and_reads_stdin(self):
    reply = self.run_code("print(input()[::-1])", stdin="abc\n")
    self.assertEqual(reply["stdout"], "cba\n")
    self.assertEqual(reply["returncode"], 0)

  def test_secrets_and_accelerators_not_in_env(self):
    os.environ["AWS_SECRET_ACCESS_KEY"] = "hunter2"
    os.environ["CUDA_VISIBLE_DEVICES"] = "0"
    try:
      with self.new_sandbox() as sb:
        reply = sb.run("exec", 5, code="import os; print(sorted(os.environ))")
    finally:
      del os.environ["AWS_SECRET_ACCESS_KEY"], os.environ["CUDA_VISIBLE_DEVICES"]
    self.assertEqual(reply["returncode"], 0, reply)
    names = eval(reply["stdout"])  # a list of str printed by the program
    self.assertNotIn("AWS_SECRET_ACCESS_KEY", names)
    self.assertNotIn("CUDA_VISIBLE_DEVICES", names)
    self.assertFalse([n for n in names if n.startswith(("TPU", "CUDA", "AWS"))])

  @absltest.skipUnless(_ROOT, "uid drop needs root")
  def test_runs_as_unprivileged_uid(self):
    reply = self.run_code("import os; print(os.getuid(), os.geteuid())")
    uid, euid = map(int, reply["stdout"].split())
    self.assertNotEqual(uid, 0)
    self.assertNotEqual(euid, 0)

  def test_process_limit_applies(self):
    reply = self.run_code("""
        import os, time
        n = 0
        try:
          for _ in range(300):
            if os.fork() == 0:
              time.sleep(2)
              os._exit(0)
            n += 1
        except OSError as e:
          print("fork failed", e.errno)
        print(n)
        """)
    self.assertIn("fork failed", reply["stdout"])
    self.assertLess(int(reply["stdout"].split()[-1]),
                    sandbox_lib.SandboxLimits().processes + 1)

  def test_fork_bomb_is_contained(self):
    marker = "forkbomb-marker-93172"
    start = time.monotonic()
    reply = self.run_code(f"""
        import os
        tag = "{marker}"
        while True:
          try:
            os.fork()
          except OSError:
            pass
        """, timeout=2)
    self.assertTrue(reply["timed_out"])
    self.assertLess(time.monotonic() - start, 20)
    self.assertEqual(self.run_code("print(1)")["stdout"], "1\n")

  def test_huge_file_fails(self):
    reply = self.run_code("""
        with open("big", "wb") as f:
          for _ in range(64):
            f.write(b"x" * (1 << 20))
        print("wrote it all")
        """)
    self.assertNotIn("wrote it all", reply["stdout"])
    self.assertNotEqual(reply["returncode"], 0)

  def test_memory_limit(self):
    reply = self.run_code("x = bytearray(8 << 30); print('allocated')")
    self.assertNotIn("allocated", reply["stdout"])

  def test_open_files_limit(self):
    reply = self.run_code("""
        fs = []
        try:
          for i in range(1000):
            fs.append(open("f%d" % i, "w"))
        except OSError:
          pass
        print(len(fs))
        """)
    self.assertLess(int(reply["stdout"]), sandbox_lib.SandboxLimits().open_files)

  def test_cpu_time_limit(self):
    start = time.monotonic()
    reply = self.run_code("while True: pass", timeout=1)
    self.assertTrue(reply["timed_out"] or reply["returncode"] != 0)
    self.assertLess(time.monotonic() - start, 10)

  def test_temp_dir_removed(self):
    reply = self.run_code("""
        import os
        open("left_behind.txt", "w").write("x")
        os.makedirs("sub/dir")
        print(os.getcwd())
        """)
    self.assertEqual(reply["returncode"], 0, reply)
    leftovers = [f for _, _, files in os.walk(self.sb.host_root) for f in files]
    self.assertNotIn("left_behind.txt", leftovers)
    self.assertEqual(os.listdir(self.sb.host_root), [])
    with self.new_sandbox() as sb:
      sb.run("exec", 5, code="print(1)")
      root = sb.host_root
      self.assertTrue(os.path.isdir(root))
    self.assertFalse(os.path.exists(root))

  def test_hung_program_killed_with_children(self):
    marker = "317.271"
    start = time.monotonic()
    reply = self.run_code(f"""
        import os, subprocess, time
        subprocess.Popen(["sleep", "{marker}"])
        if os.fork() == 0:
          os.setsid()  # leaves the process group; the uid sweep must find it
          subprocess.Popen(["sleep", "{marker}"])
          time.sleep(100)
        time.sleep(100)
        """, timeout=1)
    self.assertTrue(reply["timed_out"])
    self.assertLess(time.monotonic() - start, 10)
    time.sleep(0.2)
    if _ROOT or self.backend == "bwrap":
      self.assertEqual(_procs_with_arg(marker), [])

  def test_cannot_kill_parent(self):
    reply = self.run_code("""
        import os, signal
        try:
          os.kill(os.getppid(), signal.SIGKILL)
          print("killed")
        except PermissionError:
          print("denied")
        """)
    if _ROOT:
      self.assertEqual(reply["stdout"], "denied\n")
    self.assertEqual(self.run_code("print(2)")["stdout"], "2\n")

  def test_output_flood_is_cut(self):
    reply = self.run_code("while True: print('x' * 1000)", timeout=5)
    self.assertTrue(reply["overflow"] or reply["timed_out"])


  def test_isolation_is_announced(self):
    self.assertTrue(self.sb.isolation.startswith(f"{self.backend}: "),
                    self.sb.isolation)


class IsolatedTestBase(SandboxTestBase):
  """What every isolating backend must stop."""

  def test_network_unreachable(self):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    try:
      reply = self.run_code(f"""
          import socket
          for host in ("127.0.0.1", "1.1.1.1"):
            try:  # not create_connection: its idna codec may be unimportable
              s = socket.socket()
              s.settimeout(1)
              s.connect((host, {port}))
              print("connected", host)
            except OSError:
              print("refused", host)
          """)
    finally:
      listener.close()
    self.assertEqual(reply["stdout"], "refused 127.0.0.1\nrefused 1.1.1.1\n")

  def test_writes_only_in_its_run_directory(self):
    # The case found on a machine without bubblewrap: a world-writable
    # directory outside the run directory.
    with tempfile.TemporaryDirectory() as shared:
      os.chmod(shared, 0o1777)
      target = os.path.join(shared, "written")
      reply = self.run_code(f"""
          for path in ({target!r}, "/tmp/restem_escape", "/dev/shm/restem_escape",
                       "../restem_escape", "here"):
            try:
              open(path, "w").write("x")
              print("wrote", path)
            except OSError:
              print("denied", path)
          """)
      self.assertFalse(os.path.exists(target))
    self.assertEqual(reply["stdout"].splitlines(), [
        f"denied {target}", "denied /tmp/restem_escape",
        "denied /dev/shm/restem_escape", "denied ../restem_escape", "wrote here"])

  def test_host_files_unreadable(self):
    reply = self.run_code("""
        import os
        for path in ("/etc/passwd", "/etc/hostname", "/proc/1/cmdline"):
          try:
            open(path).read()
            print("read", path)
          except OSError:
            print("denied", path)
        """)
    if self.backend == "bwrap":  # its own /proc shows only the sandbox
      self.assertEqual(reply["stdout"].splitlines()[:2],
                       ["denied /etc/passwd", "denied /etc/hostname"])
    else:
      self.assertEqual(reply["stdout"].splitlines(), [
          "denied /etc/passwd", "denied /etc/hostname", "denied /proc/1/cmdline"])


@absltest.skipIf(_PROBLEMS["bwrap"], f"bubblewrap cannot run here: {_PROBLEMS['bwrap']}")
class BubblewrapTest(IsolatedTestBase):
  backend = "bwrap"

  def test_host_files_hidden(self):
    reply = self.run_code("""
        import os
        print(os.path.exists("/home"), os.path.exists("/etc/passwd"),
              sorted(os.listdir("/dev")))
        """)
    home, passwd, devs = reply["stdout"].split(" ", 2)
    self.assertEqual((home, passwd), ("False", "False"))
    self.assertFalse([d for d in eval(devs) if "nvidia" in d or "accel" in d])


@absltest.skipIf(_PROBLEMS["landlock"],
                 f"Landlock + seccomp cannot run here: {_PROBLEMS['landlock']}")
class LandlockTest(IsolatedTestBase):
  backend = "landlock"

  @absltest.skipUnless(platform.machine() == "x86_64", "x86_64 syscall numbers")
  def test_no_ptrace_or_memory_of_others(self):
    reply = self.run_code("""
        import ctypes, os, socket
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        print(libc.syscall(101, 0, 0, 0, 0), ctypes.get_errno())  # PTRACE_TRACEME
        local = ctypes.create_string_buffer(8)
        iov = (ctypes.c_void_p * 2)(ctypes.addressof(local), 8)
        print(libc.syscall(310, os.getppid(), iov, 1, iov, 1, 0), ctypes.get_errno())
        for family in (socket.AF_INET, socket.AF_INET6, socket.AF_NETLINK):
          try:
            socket.socket(family, socket.SOCK_DGRAM)
            print("socket", family)
          except OSError as e:
            print("no socket", e.errno)
        a, b = socket.socketpair()  # AF_UNIX stays: multiprocessing needs it
        print("pair")
        """)
    self.assertEqual(reply["stdout"].splitlines(), [
        "-1 1", "-1 1", "no socket 97", "no socket 97", "no socket 97", "pair"])


class UnsandboxedTest(SandboxTestBase):
  """With the "none" backend (opted into) the rlimits, uid drop and kills still hold."""
  backend = "none"


del SandboxTestBase, IsolatedTestBase  # only their subclasses are test cases

if __name__ == "__main__":
  absltest.main()
