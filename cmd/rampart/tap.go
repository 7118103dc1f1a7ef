package main

import (
	"bufio"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/rampart-mesh/rampart/internal/controller"
	"github.com/rampart-mesh/rampart/internal/controlplane"
	"github.com/rampart-mesh/rampart/internal/identity"
)

// maxTapLine bounds one line of the tap API's answer.
const maxTapLine = 1 << 20

func newTapCommand() *cobra.Command {
	var (
		admin, stateDir, method, path, from, status, output string
		maxEvents                                           int
		duration                                            time.Duration
	)
	cmd := &cobra.Command{
		Use:   "tap namespace/workload",
		Short: "Stream the heads of a workload's requests, live",
		Long: `Stream the requests a workload's proxies serve and send, as they happen:
direction, method, authority, path (without its query), source and
destination identities, status and duration, and the names of the headers,
with the values of content-type, user-agent and grpc-status only. Bodies and
other header values never leave the proxies.

Tapping needs the controller's tap token, read from --state-dir (the
controller's state directory): whoever can read that file may tap.
A tap ends after --max requests or --duration, whichever comes first; each
proxy also sends at most 100 requests per second per tap and drops (and
counts) the rest.`,
		Example: `  rampart tap shop/web --state-dir ~/.rampart
  rampart tap shop/web --method POST --path /api/ --max 20
  rampart tap shop/web --from spiffe://rampart.local/ns/shop/sa/checkout -o json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if output != "table" && output != "json" {
				return fmt.Errorf("tap: -o %q: want table or json", output)
			}
			ns, name, ok := strings.Cut(args[0], "/")
			if !ok || identity.ValidateName(ns) != nil || identity.ValidateName(name) != nil {
				return fmt.Errorf("tap: %q: want namespace/workload, such as shop/web", args[0])
			}
			q := url.Values{"namespace": {ns}, "workload": {name}, "max": {strconv.Itoa(maxEvents)}, "duration": {duration.String()}}
			for k, v := range map[string]string{"method": method, "path": path, "source": from, "status": status} {
				if v != "" {
					q.Set(k, v)
				}
			}
			// The controller checks the same; checking first says what to
			// fix without a round trip, named as the flag.
			if _, err := controller.ParseTapQuery(q); err != nil {
				return fmt.Errorf("tap: %s", flagError(err.Error()))
			}
			tok, err := readTapToken(stateDir)
			if err != nil {
				return err
			}
			return runTap(cmd, admin, q, tok, output)
		},
	}
	f := cmd.Flags()
	f.StringVar(&admin, "controller-admin", controller.DefaultAdminListen, "the controller's admin address (its --admin-listen)")
	f.StringVar(&stateDir, "state-dir", defaultStateDir(), "the controller's state directory (its --state-dir), which holds the tap token")
	f.StringVar(&method, "method", "", "only requests with this HTTP method")
	f.StringVar(&path, "path", "", "only requests whose path starts with this prefix")
	f.StringVar(&from, "from", "", "only requests from this SPIFFE ID")
	f.StringVar(&status, "status", "", "only answers of this status class (2 or 2xx to 5 or 5xx)")
	f.IntVar(&maxEvents, "max", controlplane.DefaultTapEvents, fmt.Sprintf("stop after this many requests (at most %d)", controlplane.MaxTapEvents))
	f.DurationVar(&duration, "duration", controlplane.DefaultTapDuration, fmt.Sprintf("stop after this long (at most %v)", controlplane.MaxTapDuration))
	f.StringVarP(&output, "output", "o", "table", "table, or json (one JSON object a line, as the controller sends them)")
	return cmd
}

// flagError names the flag of an error that names the controller's query
// parameter first.
func flagError(msg string) string {
	for _, p := range [][2]string{{"path ", "--path "}, {"source ", "--from "}, {"method ", "--method "},
		{"status ", "--status "}, {"max ", "--max "}, {"duration ", "--duration "}} {
		if strings.HasPrefix(msg, p[0]) {
			return p[1] + msg[len(p[0]):]
		}
	}
	return msg
}

// readTapToken reads the tap token from the controller's state directory.
func readTapToken(stateDir string) (string, error) {
	path := filepath.Join(stateDir, controller.TapTokenFile)
	b, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("tap: no tap token at %s: point --state-dir at the controller's state directory (the controller creates the token when it starts)", path)
		}
		return "", fmt.Errorf("tap: %w (only who may read the controller's state directory may tap)", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("tap: %s is empty", path)
	}
	return tok, nil
}

// runTap opens the tap and prints its lines until it ends.
func runTap(cmd *cobra.Command, admin string, q url.Values, tok, output string) error {
	u := admin
	if !strings.Contains(u, "://") {
		u = "http://" + u
	}
	req, err := http.NewRequestWithContext(cmd.Context(), http.MethodGet, strings.TrimRight(u, "/")+"/api/v1/tap?"+q.Encode(), nil)
	if err != nil {
		return fmt.Errorf("tap: --controller-admin %q: %w", admin, err)
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("tap: %w; is the controller running with --admin-listen %s?", err, admin)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			return fmt.Errorf("tap: %s", e.Error)
		}
		return fmt.Errorf("tap: %s answered %s", req.URL.Redacted(), resp.Status)
	}
	out := cmd.OutOrStdout()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), maxTapLine)
	ended := false
	for sc.Scan() {
		if output == "json" {
			if _, err := fmt.Fprintf(out, "%s\n", sc.Bytes()); err != nil {
				return err
			}
		}
		var l controller.TapLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			return fmt.Errorf("tap: the controller sent %q: %w", sc.Bytes(), err)
		}
		if l.Type == "end" {
			ended = true
		}
		if output == "table" {
			printTapLine(out, l)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("tap: %w", err)
	}
	if !ended && cmd.Context().Err() == nil {
		return errors.New("tap: the controller closed the stream before the tap ended")
	}
	return nil
}

// printTapLine prints one line of the tap as a row of the table.
func printTapLine(w io.Writer, l controller.TapLine) {
	switch l.Type {
	case "start":
		fmt.Fprintf(w, "Tapping %d proxy instance(s).\n", l.Instances)
		fmt.Fprintf(w, "%-12s  %-3s  %-7s  %6s  %9s  %-30s  %s\n", "TIME", "DIR", "METHOD", "STATUS", "DURATION", "AUTHORITY PATH", "SOURCE -> DESTINATION")
	case "request":
		ts := "-"
		if l.Time != nil {
			ts = l.Time.Local().Format("15:04:05.000")
		}
		dir := "in"
		if l.Direction == "outbound" {
			dir = "out"
		}
		src, dst := cmp.Or(l.Source, "(no identity)"), cmp.Or(l.Destination, "(no identity)")
		fmt.Fprintf(w, "%-12s  %-3s  %-7s  %6d  %9s  %-30s  %s -> %s\n", ts, dir, escapeControls(l.Method), l.Status,
			millis(l.DurationSeconds*1000), escapeControls(l.Authority+" "+l.Path), escapeControls(src), escapeControls(dst))
	case "end":
		fmt.Fprintf(w, "Tap ended (%s): %d request(s), %d dropped.\n", l.Reason, l.Events, l.Dropped)
	}
}

// escapeControls returns s with its control characters (C0, DEL and C1)
// written as Go escapes, as strconv.Quote writes them, so that a request
// cannot move the cursor, recolour or retitle the terminal that shows it;
// a backslash is doubled when anything is escaped, so that the escapes
// read unambiguously. Invalid UTF-8 is escaped byte by byte.
func escapeControls(s string) string {
	if !strings.ContainsFunc(s, isControl) && utf8.ValidString(s) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, "\\x%02x", s[i])
		case r == '\\':
			b.WriteString(`\\`)
		case isControl(r):
			q := strconv.QuoteRune(r) // such as '\x1b' or '\u0085'
			b.WriteString(q[1 : len(q)-1])
		default:
			b.WriteRune(r)
		}
		i += size
	}
	return b.String()
}

// isControl reports whether r is a C0 or C1 control character or DEL.
func isControl(r rune) bool { return r < 0x20 || r >= 0x7f && r <= 0x9f }
