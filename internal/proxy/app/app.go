// Package app runs the workload's app as a child process of rampart-proxy
// (rampart-proxy [flags] -- <command> [args...]), so that the controller
// can check that the app is the proxy's child and measure its executable
// as the workload's code. It starts the app in a process group of its
// own, forwards signals to that group, stops it (SIGTERM, then SIGKILL
// after a timeout) and reports how it exited as a shell would.
//
// It depends on the standard library only; it must not import the
// controller, Kubernetes packages or the rest of internal/proxy.
package app

import (
	"errors"
	"fmt"
	"io"
	"os/exec"
	"syscall"
	"time"
)

// DefaultStopTimeout is how long Stop waits after SIGTERM before SIGKILL
// when Config names no timeout.
const DefaultStopTimeout = 10 * time.Second

// Config configures an App.
type Config struct {
	// Argv is the command and its arguments; Argv[0] is looked up in PATH
	// when it holds no slash. Required.
	Argv []string
	// Env is the app's environment; nil means the proxy's own.
	Env []string
	// Stdin, Stdout and Stderr are the app's; nil means none (/dev/null).
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	// StopTimeout is how long Stop waits after SIGTERM before it kills
	// the process group; zero means DefaultStopTimeout.
	StopTimeout time.Duration
	// Credential, when set, is the user and groups the app runs as (the
	// proxy needs the privilege to switch). Under transparent
	// interception the app must not run as the proxy's own user, whose
	// traffic iptables lets through.
	Credential *syscall.Credential
}

// Validate reports what is wrong with c.
func (c Config) Validate() error {
	if len(c.Argv) == 0 || c.Argv[0] == "" {
		return errors.New("app: no command: put the app's command line after --")
	}
	if c.StopTimeout < 0 {
		return fmt.Errorf("app: stop timeout %v is negative", c.StopTimeout)
	}
	return nil
}

// App is a running app.
type App struct {
	cmd         *exec.Cmd
	stopTimeout time.Duration
	done        chan struct{} // closed once the process was waited for
	err         error         // from Wait; set before done is closed
}

// Start starts the app. The app runs in its own process group, so that a
// terminal's Ctrl-C reaches only the proxy, which forwards it (Signal),
// and it is killed by the kernel if the proxy dies without stopping it
// (Pdeathsig).
func Start(cfg Config) (*App, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	path := cfg.Argv[0]
	if lp, err := exec.LookPath(path); err == nil {
		path = lp
	} else {
		return nil, fmt.Errorf("app: %w", err)
	}
	cmd := exec.Command(path, cfg.Argv[1:]...)
	cmd.Args[0] = cfg.Argv[0]
	cmd.Env = cfg.Env
	cmd.Stdin, cmd.Stdout, cmd.Stderr = cfg.Stdin, cfg.Stdout, cfg.Stderr
	// Pdeathsig fires when the thread that started the child exits, not
	// the process; Go ends only threads that a goroutine locked and left
	// locked, which the proxy does not do.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL, Credential: cfg.Credential}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("app: starting %s: %w", cfg.Argv[0], err)
	}
	a := &App{cmd: cmd, stopTimeout: cfg.StopTimeout, done: make(chan struct{})}
	if a.stopTimeout == 0 {
		a.stopTimeout = DefaultStopTimeout
	}
	go func() {
		a.err = cmd.Wait()
		// What the app left running in its group goes with it: its
		// group ID cannot be reused while members remain.
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		close(a.done)
	}()
	return a, nil
}

// PID is the app's process ID.
func (a *App) PID() int { return a.cmd.Process.Pid }

// Done is closed once the app has exited.
func (a *App) Done() <-chan struct{} { return a.done }

// Signal sends sig to the app's process group. Signalling an app that has
// exited does nothing.
func (a *App) Signal(sig syscall.Signal) error {
	select {
	case <-a.done:
		return nil
	default:
	}
	if err := syscall.Kill(-a.PID(), sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("app: signal %v: %w", sig, err)
	}
	return nil
}

// Stop ends the app: SIGTERM to its process group, SIGKILL after the
// stop timeout if it is still running. It returns once the app has
// exited, at once if it already has.
func (a *App) Stop() {
	select {
	case <-a.done:
		return
	default:
	}
	_ = a.Signal(syscall.SIGTERM)
	t := time.NewTimer(a.stopTimeout)
	defer t.Stop()
	select {
	case <-a.done:
	case <-t.C:
		_ = a.Signal(syscall.SIGKILL)
		<-a.done
	}
}

// ExitCode is how the app exited, as a shell reports it: its exit status,
// or 128 plus the signal that ended it. It blocks until the app has
// exited.
func (a *App) ExitCode() int {
	<-a.done
	st := a.cmd.ProcessState
	if st == nil {
		return 1
	}
	if ws, ok := st.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return st.ExitCode()
}

// String describes how the app exited, or that it runs.
func (a *App) String() string {
	select {
	case <-a.done:
	default:
		return fmt.Sprintf("app %d running", a.PID())
	}
	if a.err == nil {
		return fmt.Sprintf("app %d exited with status 0", a.PID())
	}
	return fmt.Sprintf("app %d: %v", a.PID(), a.err)
}
