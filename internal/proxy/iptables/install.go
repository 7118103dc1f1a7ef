package iptables

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
)

// Install applies cfg's interception to the current network namespace
// (or wherever cfg.Runner runs the tools): IPv4 always, IPv6 too when the
// kernel has IPv6 and ip6tables is installed. Each family is one atomic
// iptables-restore --noflush transaction that also removes any jumps into
// Rampart's chains and any Rampart chains left by an earlier install, so
// running Install again, with the same or a changed Config, leaves exactly
// one copy of the rules. With cfg.DryRun it writes Render's output instead.
func Install(ctx context.Context, cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	cfg = cfg.withDefaults()
	if cfg.DryRun {
		v4, v6 := Render(cfg)
		_, err := io.WriteString(cfg.outputOrStdout(), v4+"\n"+v6)
		return err
	}
	installed := 0
	for _, f := range cfg.families() {
		saved, err := cfg.save(ctx, f)
		if err != nil {
			if f.is6 && errors.Is(err, exec.ErrNotFound) {
				if !cfg.IPv4Only {
					return fmt.Errorf("iptables: the kernel has IPv6 but ip6tables is missing, so IPv6 traffic would bypass the proxy: install the iptables package, or pass --ipv4-only to accept that: %w", err)
				}
				cfg.Logger.Warn("ip6tables not found: IPv6 traffic will not be intercepted (--ipv4-only)", "error", err)
				continue
			}
			return installErr(f, installed, err)
		}
		current := parseSave(saved)
		var cleanup []string
		for _, j := range current.jumps {
			cleanup = append(cleanup, "-D "+j)
		}
		for _, c := range current.chains {
			if !slices.Contains(chains, c) {
				cleanup = append(cleanup, "-F "+c)
			}
		}
		for _, c := range current.chains {
			if !slices.Contains(chains, c) {
				cleanup = append(cleanup, "-X "+c)
			}
		}
		if err := cfg.restore(ctx, f, renderFamily(cfg, f, cleanup)); err != nil {
			return installErr(f, installed, err)
		}
		installed++
		cfg.Logger.Info("installed interception rules", "family", f.name,
			"outbound_port", cfg.OutboundPort, "inbound_port", cfg.InboundPort,
			"proxy_uid", cfg.ProxyUID, "proxy_gid", cfg.ProxyGID, "replaced_jumps", len(current.jumps))
	}
	return nil
}

func installErr(f family, installed int, err error) error {
	if installed > 0 {
		return fmt.Errorf("%w (the IPv4 rules are installed, the %s ones are not: fix the cause and run install again, or uninstall)", err, f.name)
	}
	return err
}

// Uninstall removes Rampart's chains and every jump into them from the nat
// table, in each family, and nothing else. It succeeds when there is
// nothing to remove. Only cfg's Runner, DryRun, Output and Logger matter;
// with DryRun it writes the removal it would apply.
func Uninstall(ctx context.Context, cfg Config) error {
	cfg = cfg.withDefaults()
	for _, f := range cfg.families() {
		saved, err := cfg.save(ctx, f)
		if err != nil {
			if f.is6 && errors.Is(err, exec.ErrNotFound) {
				continue // without ip6tables nobody installed IPv6 rules
			}
			return err
		}
		current := parseSave(saved)
		if len(current.jumps) == 0 && len(current.chains) == 0 {
			cfg.Logger.Info("no interception rules to remove", "family", f.name)
			continue
		}
		var b strings.Builder
		fmt.Fprintf(&b, "# Rampart transparent interception (%s): removal, input for %s --noflush.\n*nat\n", f.name, f.restore)
		for _, j := range current.jumps {
			b.WriteString("-D " + j + "\n")
		}
		for _, c := range current.chains {
			b.WriteString("-F " + c + "\n")
		}
		for _, c := range current.chains {
			b.WriteString("-X " + c + "\n")
		}
		b.WriteString("COMMIT\n")
		if cfg.DryRun {
			if _, err := io.WriteString(cfg.outputOrStdout(), b.String()); err != nil {
				return err
			}
			continue
		}
		if err := cfg.restore(ctx, f, b.String()); err != nil {
			return err
		}
		cfg.Logger.Info("removed interception rules", "family", f.name, "chains", current.chains, "jumps", len(current.jumps))
	}
	return nil
}

func (c Config) outputOrStdout() io.Writer {
	if c.Output != nil {
		return c.Output
	}
	return os.Stdout
}

func (c Config) runner() Runner {
	if c.Runner != nil {
		return c.Runner
	}
	return ExecRunner()
}

// families lists the families to manage: IPv6 only when the kernel has it.
func (c Config) families() []family {
	has6 := c.hasIPv6
	if has6 == nil {
		has6 = kernelHasIPv6
	}
	if has6() {
		return []family{ipv4, ipv6}
	}
	c.Logger.Debug("IPv6 is disabled in the kernel: managing IPv4 rules only")
	return []family{ipv4}
}

// kernelHasIPv6 reports whether the kernel has IPv6 (it is not booted with
// ipv6.disable=1 and the module is present).
func kernelHasIPv6() bool {
	_, err := os.Stat("/proc/net/if_inet6")
	return err == nil
}

func (c Config) save(ctx context.Context, f family) (string, error) {
	out, err := c.runner()(ctx, f.save, []string{"-t", "nat"}, nil)
	if err != nil {
		return "", fmt.Errorf("reading the current %s rules: %w", f.name, err)
	}
	return string(out), nil
}

func (c Config) restore(ctx context.Context, f family, script string) error {
	// --wait takes the xtables lock like the iptables command does (the
	// legacy backend needs it; the nft backend accepts and ignores it).
	if _, err := c.runner()(ctx, f.restore, []string{"--noflush", "--wait=10"}, []byte(script)); err != nil {
		return fmt.Errorf("applying the %s rules: %w", f.name, err)
	}
	return nil
}

// saved is what parseSave finds of Rampart's in iptables-save output.
type saved struct {
	// chains are the existing chains named with ChainPrefix.
	chains []string
	// jumps are the rules, as "CHAIN spec..." without -A, that jump or go
	// from another chain into one of Rampart's.
	jumps []string
}

// parseSave reads iptables-save output and returns Rampart's part of its
// nat table.
func parseSave(out string) saved {
	var s saved
	table := ""
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, "*"):
			table = line[1:]
		case table != "nat":
		case strings.HasPrefix(line, ":"):
			name, _, _ := strings.Cut(line[1:], " ")
			if strings.HasPrefix(name, ChainPrefix) && !slices.Contains(s.chains, name) {
				s.chains = append(s.chains, name)
			}
		case strings.HasPrefix(line, "-A "):
			f := fields(line)
			if len(f) < 2 || strings.HasPrefix(f[1], ChainPrefix) {
				continue
			}
			for i := 2; i+1 < len(f); i++ {
				if (f[i] == "-j" || f[i] == "-g" || f[i] == "--jump" || f[i] == "--goto") && strings.HasPrefix(f[i+1], ChainPrefix) {
					s.jumps = append(s.jumps, strings.TrimPrefix(line, "-A "))
					break
				}
			}
		}
	}
	return s
}

// fields splits an iptables-save rule into words the way iptables-restore
// does: double quotes group words (comments are printed that way) and a
// backslash escapes a quote inside them.
func fields(line string) []string {
	var (
		out    []string
		cur    strings.Builder
		quoted bool
		inWord bool
	)
	for i := 0; i < len(line); i++ {
		ch := line[i]
		switch {
		case ch == '\\' && quoted && i+1 < len(line) && line[i+1] == '"':
			cur.WriteByte('"')
			i++
		case ch == '"':
			quoted = !quoted
			inWord = true
		case (ch == ' ' || ch == '\t') && !quoted:
			if inWord {
				out = append(out, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteByte(ch)
			inWord = true
		}
	}
	if inWord {
		out = append(out, cur.String())
	}
	return out
}
