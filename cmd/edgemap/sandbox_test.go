package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"unsafe"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// The sandbox of the units in dist/systemd, made without systemd: the
// tests run the real binary under the kernel mechanisms those settings
// turn on, so that a unit that would not start fails `make test`.
//
//   - SystemCallFilter=@system-service, ~@privileged @resources with
//     SystemCallErrorNumber=EPERM and SystemCallArchitectures=native:
//     a seccomp filter allowing the groups' system calls, as
//     systemd-analyze lists them, and EPERM for the rest;
//   - RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX: socket() of any
//     other family fails with EAFNOSUPPORT, as systemd's filter does;
//   - MemoryDenyWriteExecute=yes: the kernel's own (PR_SET_MDWE, Linux
//     6.3; systemd 253 uses it where it can), refusing memory that is
//     made executable after it was writable;
//   - NoNewPrivileges=yes, which seccomp needs anyway;
//   - DynamicUser= and AmbientCapabilities=CAP_NET_BIND_SERVICE: the tests
//     run the binary as nobody with that capability alone (when root).
//
// How: the test binary runs itself as a helper (sandboxHelperEnv set),
// which applies the filters to its own thread and execs the binary.

// sandboxHelperEnv makes the test binary the helper: it holds the allowed
// system call numbers, and the helper's arguments are the command.
const sandboxHelperEnv = "EDGEMAP_TEST_SANDBOX_SYSCALLS"

func init() {
	if spec := os.Getenv(sandboxHelperEnv); spec != "" {
		os.Exit(sandboxExec(spec, os.Args[1:]))
	}
}

// sandboxExec is the helper: it locks itself to one thread, turns the
// sandbox on and execs argv; it returns only if that fails.
func sandboxExec(spec string, argv []string) int {
	runtime.LockOSThread()
	var allowed []uint32
	for _, f := range strings.Fields(spec) {
		n, err := strconv.ParseUint(f, 10, 32)
		if err != nil {
			fmt.Fprintln(os.Stderr, "sandbox: bad system call number", f)
			return 2
		}
		allowed = append(allowed, uint32(n))
	}
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, sandboxHelperEnv+"=") })
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		fmt.Fprintln(os.Stderr, "sandbox: no_new_privs:", err)
		return 2
	}
	if err := unix.Prctl(unix.PR_SET_MDWE, unix.PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0); err != nil {
		fmt.Fprintln(os.Stderr, "sandbox: MDWE:", err)
		return 2
	}
	prog, err := seccompProgram(allowed)
	if err != nil {
		fmt.Fprintln(os.Stderr, "sandbox:", err)
		return 2
	}
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	if _, _, errno := unix.RawSyscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, 0, uintptr(unsafe.Pointer(&fprog))); errno != 0 {
		fmt.Fprintln(os.Stderr, "sandbox: seccomp:", errno)
		return 2
	}
	err = syscall.Exec(argv[0], argv, env)
	fmt.Fprintln(os.Stderr, "sandbox: exec:", err)
	return 2
}

// seccompProgram allows the system calls numbered allowed, socket() of
// AF_INET, AF_INET6 and AF_UNIX only, and answers EPERM to the rest; a
// call of another architecture kills the process.
func seccompProgram(allowed []uint32) ([]unix.SockFilter, error) {
	const (
		archOff = 4  // seccomp_data.arch
		nrOff   = 0  // seccomp_data.nr
		arg0Off = 16 // seccomp_data.args[0], its low half on amd64
	)
	allow := bpf.RetConstant{Val: unix.SECCOMP_RET_ALLOW}
	prog := []bpf.Instruction{
		bpf.LoadAbsolute{Off: archOff, Size: 4},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.AUDIT_ARCH_X86_64, SkipTrue: 1},
		bpf.RetConstant{Val: unix.SECCOMP_RET_KILL_PROCESS},
		bpf.LoadAbsolute{Off: nrOff, Size: 4},
		// socket(): by family.
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: unix.SYS_SOCKET, SkipTrue: 6},
		bpf.LoadAbsolute{Off: arg0Off, Size: 4},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.AF_INET, SkipTrue: 3},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.AF_INET6, SkipTrue: 2},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.AF_UNIX, SkipTrue: 1},
		bpf.RetConstant{Val: unix.SECCOMP_RET_ERRNO | uint32(unix.EAFNOSUPPORT)},
		allow,
	}
	for _, nr := range allowed {
		prog = append(prog, bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: nr, SkipTrue: 1}, allow)
	}
	prog = append(prog, bpf.RetConstant{Val: unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)})
	raw, err := bpf.Assemble(prog)
	if err != nil {
		return nil, err
	}
	out := make([]unix.SockFilter, len(raw))
	for i, r := range raw {
		out[i] = unix.SockFilter{Code: r.Op, Jt: r.Jt, Jf: r.Jf, K: r.K}
	}
	return out, nil
}

var (
	syscallsOnce    sync.Once
	allowedSyscalls []uint32
	syscallsErr     error
)

// unitSyscalls are the numbers of the system calls the units allow:
// @system-service without @privileged and @resources, expanded by
// systemd-analyze. It skips the test where systemd-analyze is missing or
// the machine is not amd64 (the filter is written for it).
func unitSyscalls(t *testing.T) []uint32 {
	t.Helper()
	if runtime.GOARCH != "amd64" {
		t.Skipf("the seccomp sandbox is written for amd64, not %s", runtime.GOARCH)
	}
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Skip("systemd-analyze is missing (Debian: apt-get install systemd): it lists the units' system call groups")
	}
	syscallsOnce.Do(func() {
		numbers, err := syscallNumbers()
		if err != nil {
			syscallsErr = err
			return
		}
		allow, err := expandGroups("@system-service")
		if err != nil {
			syscallsErr = err
			return
		}
		deny, err := expandGroups("@privileged", "@resources")
		if err != nil {
			syscallsErr = err
			return
		}
		for name := range allow {
			if nr, ok := numbers[name]; ok && !deny[name] {
				allowedSyscalls = append(allowedSyscalls, nr)
			}
		}
		slices.Sort(allowedSyscalls)
	})
	if syscallsErr != nil {
		t.Fatal(syscallsErr)
	}
	return allowedSyscalls
}

// expandGroups asks systemd-analyze for the system calls of groups,
// groups inside them included.
func expandGroups(groups ...string) (map[string]bool, error) {
	out := map[string]bool{}
	seen := map[string]bool{}
	for len(groups) > 0 {
		g := groups[0]
		groups = groups[1:]
		if seen[g] {
			continue
		}
		seen[g] = true
		raw, err := exec.Command("systemd-analyze", "syscall-filter", "--no-pager", g).Output()
		if err != nil {
			return nil, fmt.Errorf("systemd-analyze syscall-filter %s: %w", g, err)
		}
		sc := bufio.NewScanner(strings.NewReader(string(raw)))
		for sc.Scan() {
			line := strings.TrimSpace(sc.Text())
			switch {
			case line == "" || strings.HasPrefix(line, "#") || line == g:
			case strings.HasPrefix(line, "@"):
				groups = append(groups, line)
			default:
				out[line] = true
			}
		}
	}
	return out, nil
}

// syscallNumbers reads the amd64 system call numbers from
// golang.org/x/sys/unix's table (SYS_NEWFSTATAT = 262 is newfstatat).
func syscallNumbers() (map[string]uint32, error) {
	dir, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "golang.org/x/sys").Output()
	if err != nil {
		return nil, fmt.Errorf("go list golang.org/x/sys: %w", err)
	}
	raw, err := os.ReadFile(filepath.Join(strings.TrimSpace(string(dir)), "unix", "zsysnum_linux_amd64.go"))
	if err != nil {
		return nil, err
	}
	out := map[string]uint32{}
	for _, m := range regexp.MustCompile(`(?m)^\s*SYS_(\w+)\s*=\s*(\d+)`).FindAllStringSubmatch(string(raw), -1) {
		n, _ := strconv.ParseUint(m[2], 10, 32)
		out[strings.ToLower(m[1])] = uint32(n)
	}
	if len(out) < 300 {
		return nil, fmt.Errorf("only %d system calls in x/sys's amd64 table", len(out))
	}
	return out, nil
}

// sandboxed is a command that runs bin with args inside the units'
// sandbox. As root it runs as nobody with CAP_NET_BIND_SERVICE alone
// (DynamicUser=, AmbientCapabilities=); then bin and what it reads must
// be readable by nobody (worldReadable).
func sandboxed(t *testing.T, bin string, args ...string) *exec.Cmd {
	t.Helper()
	allowed := unitSyscalls(t)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	nums := make([]string, len(allowed))
	for i, n := range allowed {
		nums[i] = strconv.Itoa(int(n))
	}
	helper := self
	if os.Geteuid() == 0 {
		// The test binary sits in go test's private directory; nobody
		// runs a copy.
		helper = filepath.Join(worldReadableDir(t), "sandbox-helper")
		copyFile(t, self, helper, 0o755)
	}
	cmd := exec.Command(helper, append([]string{bin}, args...)...)
	cmd.Env = append(os.Environ(), sandboxHelperEnv+"="+strings.Join(nums, " "))
	if os.Geteuid() == 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{
			Credential:  &syscall.Credential{Uid: nobody, Gid: nobody},
			AmbientCaps: []uintptr{unix.CAP_NET_BIND_SERVICE},
		}
	}
	return cmd
}

// nobody is the user the sandbox runs as, as a DynamicUser would be: an
// unprivileged uid that owns nothing.
const nobody = 65534

// worldReadableDir is a new directory that nobody may read and search,
// removed when the test ends.
func worldReadableDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "edgemap-sandbox-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func copyFile(t *testing.T, from, to string, mode os.FileMode) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}
