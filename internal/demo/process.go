package demo

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// tailLines is how many lines of a child's log an error quotes.
const tailLines = 20

// errStopping refuses to start a child once the supervisor is stopping.
var errStopping = errors.New("demo: stopping")

// child is one process the demo started.
type child struct {
	name    string
	stage   int // stopped after every child of a higher stage
	logPath string
	cmd     *exec.Cmd
	done    chan struct{} // closed once the process has been waited for
	err     error         // how it exited; set before done is closed
}

func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// signal sends sig to the child's process group.
func (c *child) signal(sig syscall.Signal) error {
	return syscall.Kill(-c.cmd.Process.Pid, sig)
}

// exitError is a child that exited while it should have been running.
type exitError struct {
	name, logPath string
	err           error // from Wait; nil for exit status 0
	tail          string
}

func (e *exitError) Error() string {
	how := "exit status 0"
	if e.err != nil {
		how = e.err.Error()
	}
	return fmt.Sprintf("%s exited unexpectedly (%s); %s", e.name, how, describeTail(e.logPath, e.tail))
}

// describeTail introduces the last lines of a log for an error message.
func describeTail(path, tail string) string {
	if tail == "" {
		return "its log " + path + " is empty"
	}
	return "the end of its log " + path + ":\n" + indent(tail, "    ")
}

func indent(s, prefix string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i, l := range lines {
		lines[i] = prefix + l
	}
	return strings.Join(lines, "\n")
}

// supervisor starts the demo's processes, notices when one dies, and stops
// them all. Each child runs in its own process group, so a Ctrl-C on the
// terminal reaches only the demo, which then stops the children in order;
// Pdeathsig kills a child if the demo itself dies without stopping it.
type supervisor struct {
	log         *slog.Logger
	stopTimeout time.Duration
	// exited receives every child that exits before stop is called.
	exited chan *child
	wg     sync.WaitGroup // one per child: the goroutine waiting for it

	// mu guards the fields below; it is held across starting a process so
	// that stop sees every child that started.
	mu       sync.Mutex
	children []*child
	stopping bool
}

// maxChildren bounds the children of one supervisor (exited's buffer).
const maxChildren = 32

func newSupervisor(log *slog.Logger, stopTimeout time.Duration) *supervisor {
	return &supervisor{log: log, stopTimeout: stopTimeout, exited: make(chan *child, maxChildren)}
}

// start runs argv with its output appended to a fresh log file at logPath.
func (s *supervisor) start(name string, stage int, argv []string, logPath string) (*child, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("demo: %s log: %w", name, err)
	}
	defer f.Close() // the child has its own descriptor
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = f, f
	// Pdeathsig fires when the thread that started the child exits, not
	// the process; Go only ends threads that a goroutine locked and left
	// locked, which nothing here does.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	c := &child{name: name, stage: stage, logPath: logPath, cmd: cmd, done: make(chan struct{})}

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopping {
		return nil, errStopping
	}
	if len(s.children) == maxChildren {
		return nil, fmt.Errorf("demo: more than %d processes", maxChildren)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("demo: starting %s: %w", name, err)
	}
	s.log.Debug("started", "process", name, "pid", cmd.Process.Pid, "argv", argv, "log", logPath)
	s.children = append(s.children, c)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		err := cmd.Wait()
		c.err = err
		close(c.done)
		s.mu.Lock()
		stopping := s.stopping
		s.mu.Unlock()
		s.log.Debug("exited", "process", name, "err", err, "expected", stopping)
		if !stopping {
			s.exited <- c // never blocks: one slot per child
		}
	}()
	return c, nil
}

// exitErr describes c's unexpected exit with the end of its log.
func (s *supervisor) exitErr(c *child) error {
	<-c.done
	return &exitError{name: c.name, logPath: c.logPath, err: c.err, tail: tail(c.logPath, tailLines)}
}

// stop ends every child: stage by stage from the highest, SIGTERM to each
// process group, SIGKILL to those still running after stopTimeout. It
// returns once every child has been waited for. It is idempotent.
func (s *supervisor) stop() {
	s.mu.Lock()
	s.stopping = true
	children := slices.Clone(s.children)
	s.mu.Unlock()

	stages := make(map[int][]*child)
	var order []int
	for _, c := range children {
		if _, ok := stages[c.stage]; !ok {
			order = append(order, c.stage)
		}
		stages[c.stage] = append(stages[c.stage], c)
	}
	slices.Sort(order)
	slices.Reverse(order)
	for _, st := range order {
		s.stopGroup(stages[st])
	}
	s.wg.Wait()
	// Anything a child left behind in its group goes too.
	for _, c := range children {
		if err := c.signal(syscall.SIGKILL); err == nil {
			s.log.Debug("killed leftovers in process group", "process", c.name)
		}
	}
}

func (s *supervisor) stopGroup(cs []*child) {
	for _, c := range cs {
		if !c.exited() {
			if err := c.signal(syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
				s.log.Warn("SIGTERM failed", "process", c.name, "err", err)
			}
		}
	}
	deadline := time.NewTimer(s.stopTimeout)
	defer deadline.Stop()
	for _, c := range cs {
		select {
		case <-c.done:
			continue
		case <-deadline.C:
		}
		for _, c := range cs {
			if !c.exited() {
				s.log.Warn("still running after SIGTERM; killing it", "process", c.name, "after", s.stopTimeout)
				c.signal(syscall.SIGKILL) //nolint:errcheck // it may just have exited
			}
		}
		break
	}
	for _, c := range cs {
		<-c.done
	}
}

// tail returns the last n lines of the file at path, or a note saying why
// it cannot.
func tail(path string, n int) string {
	const maxRead = 64 << 10
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() > maxRead {
		f.Seek(st.Size()-maxRead, io.SeekStart) //nolint:errcheck // then we read from the start
	}
	b, err := io.ReadAll(f)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	b = bytes.TrimRight(b, "\n")
	if len(b) == 0 {
		return ""
	}
	lines := bytes.Split(b, []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}
