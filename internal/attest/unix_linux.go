//go:build linux

package attest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/rampart-mesh/rampart/internal/codedigest"
)

// usePeerPIDFD is whether CaptureUnixPeer asks the kernel for a pidfd of
// the connecting process (SO_PEERPIDFD, Linux 6.5). Tests turn it off to
// exercise the fallback.
var usePeerPIDFD = true

// peerSys holds the file descriptors that pin a peer process:
//
//   - pidfd refers to the process itself, not its PID: from SO_PEERPIDFD
//     it is the process that connected even if it has exited since, so
//     a live pidfd proves the PID was not reused. -1 when the kernel gives
//     none (before Linux 5.3).
//   - procfd is /proc/<pid>, opened at accept time; once that process
//     exits, reading through it fails rather than reaching a new process
//     with the same PID.
//   - exe is the executable the process ran at accept time, opened through
//     /proc/<pid>/exe: a later exec or a replaced file on disk does not
//     change what is hashed.
type peerSys struct {
	pidfd     int
	procfd    int
	exe       *os.File
	exeDev    uint64
	exeIno    uint64
	startTime string // field 22 of /proc/<pid>/stat, in clock ticks since boot
}

func (s *peerSys) close() error {
	var errs []error
	if s.exe != nil {
		errs = append(errs, s.exe.Close())
		s.exe = nil
	}
	for _, fd := range []*int{&s.pidfd, &s.procfd} {
		if *fd >= 0 {
			errs = append(errs, unix.Close(*fd))
			*fd = -1
		}
	}
	return errors.Join(errs...)
}

// CaptureUnixPeer identifies the process at the other end of conn and pins
// it, as early as possible after accept: it reads SO_PEERCRED (the PID,
// user and group of the process that called connect), takes a pidfd of
// that process (SO_PEERPIDFD, or pidfd_open of the PID on kernels before
// 6.5), opens /proc/<pid> and, through it, the executable, records the
// process's start time, and then checks that the process is still alive,
// so that what was opened belongs to it and not to a process that reused
// its PID. It always returns a peer; when capture failed, Err says why and
// the attestor refuses.
//
// What remains (docs/attestation.md): a process may connect and then
// execute another program before the controller accepts the connection;
// what is hashed is the program it runs when the controller opens its
// executable. Policies that list uids bound this to processes of that user.
// Without a pidfd (kernels before 5.3), a PID reused between connect and
// accept is caught only by the start-time check.
func CaptureUnixPeer(conn *net.UnixConn) *UnixPeer {
	p := &UnixPeer{sys: peerSys{pidfd: -1, procfd: -1}}
	if err := p.capture(conn); err != nil {
		p.err = err
		_ = p.sys.close()
		p.closed = true
	}
	return p
}

func (p *UnixPeer) capture(conn *net.UnixConn) error {
	if conn == nil {
		return refuse(ReasonBadEvidence, "no connection", nil)
	}
	rc, err := conn.SyscallConn()
	if err != nil {
		return refuse(ReasonPeerUnreadable, "cannot read the peer's credentials", err)
	}
	var (
		cred             *unix.Ucred
		credErr, ctrlErr error
		pidfd            = -1
	)
	ctrlErr = rc.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
		if credErr == nil && usePeerPIDFD {
			if pfd, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PEERPIDFD); err == nil {
				pidfd = pfd
			}
		}
	})
	if pidfd >= 0 {
		unix.CloseOnExec(pidfd)
		p.sys.pidfd = pidfd
	}
	if err := errors.Join(ctrlErr, credErr); err != nil {
		return refuse(ReasonPeerUnreadable, "cannot read the peer's credentials (SO_PEERCRED)", err)
	}
	if cred.Pid <= 0 {
		// The peer is in a PID namespace this controller cannot see into.
		return refuse(ReasonPeerUnreadable, "the kernel gives no PID for the peer (is it in another PID namespace?)", nil)
	}
	p.PID, p.UID, p.GID = cred.Pid, cred.Uid, cred.Gid

	if p.sys.pidfd < 0 {
		if fd, err := unix.PidfdOpen(int(p.PID), 0); err == nil {
			p.sys.pidfd = fd
		} else if !errors.Is(err, unix.ENOSYS) {
			return refuse(ReasonPeerGone, fmt.Sprintf("process %d is gone", p.PID), err)
		}
	}
	procfd, err := unix.Open("/proc/"+strconv.Itoa(int(p.PID)), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return refuse(ReasonPeerGone, fmt.Sprintf("process %d is gone", p.PID), err)
	}
	p.sys.procfd = procfd
	st, err := readStat(procfd)
	if err != nil {
		return refuse(ReasonPeerGone, fmt.Sprintf("process %d is gone", p.PID), err)
	}
	p.sys.startTime = st.startTime
	return p.pinExecutable()
}

// pinExecutable opens the executable of the process whose /proc directory
// is open, records what it is, and checks that the process is still the
// one captured.
func (p *UnixPeer) pinExecutable() error {
	procfd := p.sys.procfd
	exefd, err := unix.Openat(procfd, "exe", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return p.exeError(err)
	}
	p.sys.exe = os.NewFile(uintptr(exefd), "/proc/"+strconv.Itoa(int(p.PID))+"/exe")
	var st unix.Stat_t
	if err := unix.Fstat(exefd, &st); err != nil {
		return refuse(ReasonPeerUnreadable, fmt.Sprintf("cannot stat the executable of process %d", p.PID), err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return refuse(ReasonPeerUnreadable, fmt.Sprintf("the executable of process %d is not a regular file", p.PID), nil)
	}
	p.sys.exeDev, p.sys.exeIno = st.Dev, st.Ino
	p.exePath, err = readlinkat(procfd, "exe")
	if err != nil {
		return p.exeError(err)
	}
	return p.checkSameLocked()
}

// CaptureApp pins the app that the process on p says it runs as its child
// (CertifyRequest.app_pid), by its PID as that process sees it. The app
// must be a direct child of p (its parent PID is p's while p is alive and
// the same process, and it started after p); it is pinned like p (a pidfd,
// /proc/<pid> and its executable opened, its start time) and its effective
// user and group are read from /proc/<pid>/status. It always returns an
// app; when capture failed, Err says why (app_not_child, app_gone,
// peer_unreadable, or p's own error). Close it when done; p stays open.
//
// p and the controller must share a PID namespace view: the PID is looked
// up in the controller's, and a PID that is not p's child there is
// refused.
func (p *UnixPeer) CaptureApp(pid uint32) *UnixPeer {
	app := &UnixPeer{parent: p, sys: peerSys{pidfd: -1, procfd: -1}}
	if err := app.captureApp(pid); err != nil {
		app.err = err
		_ = app.sys.close()
		app.closed = true
	}
	return app
}

func (app *UnixPeer) captureApp(pid uint32) error {
	p := app.parent
	if err := p.Err(); err != nil {
		return err
	}
	if pid == 0 || pid > 1<<22 {
		return refuse(ReasonBadEvidence, fmt.Sprintf("app PID %d is not a process ID", pid), nil)
	}
	app.PID = int32(pid)
	if app.PID == p.PID {
		return refuse(ReasonAppNotChild, fmt.Sprintf("app PID %d is the connected process itself; send the PID of the app it runs as its child, or none", pid), nil)
	}
	if fd, err := unix.PidfdOpen(int(app.PID), 0); err == nil {
		app.sys.pidfd = fd
	} else if !errors.Is(err, unix.ENOSYS) {
		return refuse(ReasonAppGone, fmt.Sprintf("app process %d is gone", pid), err)
	}
	procfd, err := unix.Open("/proc/"+strconv.Itoa(int(app.PID)), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return refuse(ReasonAppGone, fmt.Sprintf("app process %d is gone", pid), err)
	}
	app.sys.procfd = procfd
	st, err := readStat(procfd)
	if err != nil {
		return refuse(ReasonAppGone, fmt.Sprintf("app process %d is gone", pid), err)
	}
	app.sys.startTime = st.startTime
	if err := app.checkChild(st); err != nil {
		return err
	}
	if app.UID, app.GID, err = readEffectiveIDs(procfd); err != nil {
		return refuse(ReasonAppGone, fmt.Sprintf("cannot read the user of app process %d", pid), err)
	}
	// The pidfd, /proc/<pid> and the parent link were taken before this
	// check: a live pidfd and an unchanged start time prove they are the
	// app's.
	return app.pinExecutable()
}

// checkChild checks, for an app, that st is the stat of a child of its
// parent: the parent PID is the parent's, and it did not start before the
// parent. The parent is checked to be still alive and the same, so that
// its PID was not reused.
func (app *UnixPeer) checkChild(st procStat) error {
	p := app.parent
	if st.ppid != p.PID {
		return refuse(ReasonAppNotChild, fmt.Sprintf("process %d is not a child of process %d (its parent is %d): the proxy must start the app itself (rampart-proxy -- <command>)", app.PID, p.PID, st.ppid), nil)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return refuse(ReasonPeerGone, fmt.Sprintf("the connection of process %d is closed", p.PID), nil)
	}
	if !startedAtOrAfter(st.startTime, p.sys.startTime) {
		return refuse(ReasonAppNotChild, fmt.Sprintf("process %d started before process %d, so it is not its child", app.PID, p.PID), nil)
	}
	return p.checkSameLocked()
}

// startedAtOrAfter compares two start times in clock ticks.
func startedAtOrAfter(a, b string) bool {
	x, errA := strconv.ParseUint(a, 10, 64)
	y, errB := strconv.ParseUint(b, 10, 64)
	return errA == nil && errB == nil && x >= y
}

// reasons returns the refusal reasons of p going away and of p executing
// another program: the app's or the connected process's.
func (p *UnixPeer) reasons() (gone, changed string) {
	if p.parent != nil {
		return ReasonAppGone, ReasonAppChanged
	}
	return ReasonPeerGone, ReasonPeerChanged
}

// pollPidfd is unix.Poll; tests replace it to inject errors.
var pollPidfd = unix.Poll

// pidfdExited reports whether the process of a pidfd has exited: a pidfd
// polls readable (or hung up) then. A poll that a signal interrupts is
// retried: the Go runtime signals its own threads (preemption), and EINTR
// says nothing about the process.
func pidfdExited(pidfd int) (bool, error) {
	for {
		fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
		n, err := pollPidfd(fds, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return false, err
		}
		return n > 0 && fds[0].Revents&(unix.POLLIN|unix.POLLHUP) != 0, nil
	}
}

// checkSameLocked checks that the process captured is still alive, still
// the same process (start time) and still runs the executable captured.
// A live pidfd taken from SO_PEERPIDFD proves that the PID was never
// reused, hence that everything opened through /proc/<pid> is the
// connecting process's.
func (p *UnixPeer) checkSameLocked() error {
	goneReason, changedReason := p.reasons()
	gone := func(err error) error {
		if p.parent != nil {
			return refuse(goneReason, fmt.Sprintf("app process %d exited (its PID may belong to another process now); the app must stay while it is attested", p.PID), err)
		}
		return refuse(goneReason, fmt.Sprintf("process %d exited (its PID may belong to another process now); the connecting process must stay while it is attested", p.PID), err)
	}
	if p.sys.pidfd >= 0 {
		exited, err := pidfdExited(p.sys.pidfd)
		if err != nil {
			return refuse(ReasonPeerUnreadable, fmt.Sprintf("cannot poll the pidfd of process %d", p.PID), err)
		}
		if exited {
			return gone(nil)
		}
	}
	stat, err := readStat(p.sys.procfd)
	if err != nil {
		return gone(err)
	}
	if stat.startTime != p.sys.startTime {
		return gone(fmt.Errorf("start time %s, was %s", stat.startTime, p.sys.startTime))
	}
	var st unix.Stat_t
	if err := unix.Fstatat(p.sys.procfd, "exe", &st, 0); err != nil {
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH) {
			return gone(err)
		}
		return p.exeError(err)
	}
	if st.Dev != p.sys.exeDev || st.Ino != p.sys.exeIno {
		if p.parent != nil {
			return refuse(changedReason, fmt.Sprintf("app process %d executed another program while it was attested", p.PID), nil)
		}
		return refuse(changedReason, fmt.Sprintf("process %d executed another program since it connected", p.PID), nil)
	}
	if p.parent != nil {
		// Still the child of a live, unchanged parent: an app whose proxy
		// exited is reparented, and its proxy's PID may be reused.
		if err := p.checkChild(stat); err != nil {
			return err
		}
	}
	return nil
}

// measure hashes the executable captured and checks the process again.
func (p *UnixPeer) measure(limit int64) (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return "", refuse(ReasonPeerGone, fmt.Sprintf("the connection of process %d is closed", p.PID), nil)
	}
	if p.digest == "" {
		var st unix.Stat_t
		if err := unix.Fstat(int(p.sys.exe.Fd()), &st); err != nil {
			return "", refuse(ReasonPeerUnreadable, fmt.Sprintf("cannot stat the executable of process %d", p.PID), err)
		}
		if st.Size > limit {
			return "", refuse(ReasonPeerUnreadable, fmt.Sprintf("the executable of process %d is %d bytes, more than the %d the controller hashes", p.PID, st.Size, limit), nil)
		}
		digest, err := codedigest.Sum(io.NewSectionReader(p.sys.exe, 0, limit+1), limit)
		if err != nil {
			return "", refuse(ReasonPeerUnreadable, fmt.Sprintf("cannot hash the executable of process %d", p.PID), err)
		}
		p.digest = digest
	}
	// Checked after hashing: the process still runs what was hashed.
	if err := p.checkSameLocked(); err != nil {
		return "", err
	}
	return p.digest, nil
}

// signature reads <executable>.sig as the process sees its file system
// (through /proc/<pid>/root), without blocking on a FIFO and bounded in
// size.
func (p *UnixPeer) signature() ([]byte, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, errors.New("the connection is closed")
	}
	path := p.exePath
	if strings.HasSuffix(path, " (deleted)") {
		return nil, fmt.Errorf("the executable %q was deleted or replaced on disk after the process started; restart it", path)
	}
	if !strings.HasPrefix(path, "/") {
		return nil, fmt.Errorf("the executable path %q is not absolute", path)
	}
	sigPath := path + ".sig"
	fd, err := unix.Openat(p.sys.procfd, "root"+sigPath, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", sigPath, err)
	}
	f := os.NewFile(uintptr(fd), sigPath)
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("stat %s: %w", sigPath, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", sigPath)
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxSignatureFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", sigPath, err)
	}
	sig, err := DecodeSignature(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", sigPath, err)
	}
	return sig, nil
}

func (p *UnixPeer) exeError(err error) error {
	gone, _ := p.reasons()
	what := p.describe()
	switch {
	case errors.Is(err, unix.ENOENT), errors.Is(err, unix.ESRCH):
		return refuse(gone, what+" exited", err)
	case errors.Is(err, unix.EACCES), errors.Is(err, unix.EPERM):
		return refuse(ReasonPeerUnreadable, "the controller may not read the executable of "+what+": run the controller as root, or as the user of the workloads it attests", err)
	default:
		return refuse(ReasonPeerUnreadable, "cannot open the executable of "+what, err)
	}
}

// procStat is what the controller reads from /proc/<pid>/stat.
type procStat struct {
	ppid      int32  // field 4
	startTime string // field 22, in clock ticks since boot
}

// readStat reads the stat file in the /proc/<pid> directory procfd.
func readStat(procfd int) (procStat, error) {
	fd, err := unix.Openat(procfd, "stat", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return procStat{}, err
	}
	f := os.NewFile(uintptr(fd), "stat")
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, 4096))
	if err != nil {
		return procStat{}, err
	}
	start, err := parseStartTime(data)
	if err != nil {
		return procStat{}, err
	}
	ppid, err := parsePPID(data)
	if err != nil {
		return procStat{}, err
	}
	return procStat{ppid: ppid, startTime: start}, nil
}

// parsePPID takes field 4, the parent's PID, from /proc/<pid>/stat.
func parsePPID(stat []byte) (int32, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("malformed /proc stat: no command name")
	}
	fields := strings.Fields(string(stat[i+1:]))
	const ppidField = 4 - 3
	if len(fields) <= ppidField {
		return 0, errors.New("malformed /proc stat: too few fields")
	}
	ppid, err := strconv.ParseInt(fields[ppidField], 10, 32)
	if err != nil {
		return 0, fmt.Errorf("malformed /proc stat: parent PID %q", fields[ppidField])
	}
	return int32(ppid), nil
}

// readEffectiveIDs reads the effective user and group of the process from
// the status file in the /proc/<pid> directory procfd.
func readEffectiveIDs(procfd int) (uid, gid uint32, err error) {
	fd, err := unix.Openat(procfd, "status", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, 0, err
	}
	f := os.NewFile(uintptr(fd), "status")
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, 64<<10))
	if err != nil {
		return 0, 0, err
	}
	return parseEffectiveIDs(data)
}

// parseEffectiveIDs takes the effective IDs, the second of the "Uid:" and
// "Gid:" lines (real, effective, saved, file system), from
// /proc/<pid>/status.
func parseEffectiveIDs(status []byte) (uid, gid uint32, err error) {
	var haveUID, haveGID bool
	for line := range strings.SplitSeq(string(status), "\n") {
		name, rest, ok := strings.Cut(line, ":")
		if !ok || (name != "Uid" && name != "Gid") {
			continue
		}
		fields := strings.Fields(rest)
		if len(fields) < 2 {
			return 0, 0, fmt.Errorf("malformed /proc status line %q", line)
		}
		v, err := strconv.ParseUint(fields[1], 10, 32)
		if err != nil {
			return 0, 0, fmt.Errorf("malformed /proc status line %q", line)
		}
		if name == "Uid" {
			uid, haveUID = uint32(v), true
		} else {
			gid, haveGID = uint32(v), true
		}
	}
	if !haveUID || !haveGID {
		return 0, 0, errors.New("malformed /proc status: no Uid or Gid line")
	}
	return uid, gid, nil
}

// parseStartTime takes field 22 from /proc/<pid>/stat. The second field,
// the command name in parentheses, may itself hold spaces and ')': fields
// are counted after the last ')'.
func parseStartTime(stat []byte) (string, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return "", errors.New("malformed /proc stat: no command name")
	}
	// After ") " come fields 3 (state) onward; start time is field 22.
	fields := strings.Fields(string(stat[i+1:]))
	const startTimeField = 22 - 3
	if len(fields) <= startTimeField {
		return "", errors.New("malformed /proc stat: too few fields")
	}
	return fields[startTimeField], nil
}

func readlinkat(dirfd int, name string) (string, error) {
	buf := make([]byte, 4096)
	n, err := unix.Readlinkat(dirfd, name, buf)
	if err != nil {
		return "", err
	}
	if n >= len(buf) {
		return "", errors.New("executable path too long")
	}
	return string(buf[:n]), nil
}
