package iptables

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
)

// Runner runs tool (iptables-save, iptables-restore, ip6tables-save or
// ip6tables-restore) with args, feeding it stdin, and returns its standard
// output. When the tool is not installed the error wraps exec.ErrNotFound.
// Tests substitute a fake; ExecRunner runs the real binaries.
type Runner func(ctx context.Context, tool string, args []string, stdin []byte) ([]byte, error)

// ExecRunner returns a Runner that executes the tools with
// exec.CommandContext. A non-empty prefix is put before each command line:
// "ip", "netns", "exec", "NAME" runs them in a named network namespace.
// Errors carry the command line and what the tool wrote to standard error.
func ExecRunner(prefix ...string) Runner {
	prefix = append([]string(nil), prefix...)
	return func(ctx context.Context, tool string, args []string, stdin []byte) ([]byte, error) {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("iptables: %s not found: install the iptables package (Debian: apt-get install iptables): %w", tool, exec.ErrNotFound)
		}
		argv := append(append(append([]string(nil), prefix...), tool), args...)
		if _, err := exec.LookPath(argv[0]); err != nil {
			return nil, fmt.Errorf("iptables: %s not found: %w", argv[0], err)
		}
		cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
		cmd.Stdin = bytes.NewReader(stdin)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			msg := strings.TrimSpace(stderr.String())
			if msg == "" {
				msg = "no error output"
			}
			hint := ""
			if strings.Contains(msg, "ermission denied") || strings.Contains(msg, "Operation not permitted") {
				hint = " (run as root, or with CAP_NET_ADMIN and CAP_NET_RAW)"
			}
			return stdout.Bytes(), fmt.Errorf("iptables: %s: %w: %s%s", strings.Join(argv, " "), err, msg, hint)
		}
		return stdout.Bytes(), nil
	}
}
