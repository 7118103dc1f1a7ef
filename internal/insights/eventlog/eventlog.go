// Package eventlog keeps the controller's security events (insights.Event)
// in the state directory: an append-only file of JSON lines, mode 0600,
// bounded to the newest events, read back when the controller starts, and
// listed newest first for GET /api/v1/events and rampart events.
//
// It depends on internal/insights (the Event type) and internal/fsutil
// only; never on the controller, the proxy or Kubernetes libraries.
package eventlog

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/rampart-mesh/rampart/internal/fsutil"
	"github.com/rampart-mesh/rampart/internal/insights"
)

// DefaultMax is the number of events a Log keeps when Open is given none.
const DefaultMax = 10_000

// MaxLine bounds one line of the file: an event is well under it. A
// longer line is skipped when loading.
const MaxLine = 64 << 10

// Query selects events. The zero Query selects every event kept.
type Query struct {
	// Since keeps the events at or after it; zero keeps all.
	Since time.Time
	// Detection keeps the events of one detection; empty keeps all.
	Detection insights.Detection
	// Limit bounds the events returned, the newest first; zero or less
	// returns all that match.
	Limit int
}

// Log is the event log. Its methods are safe for concurrent use.
type Log struct {
	path string
	max  int

	mu     sync.Mutex
	events []insights.Event // guarded by mu; oldest first, at most max
	lines  int              // guarded by mu; lines in the file, good or not
	f      *os.File         // guarded by mu; nil once closed
	// skipped counts the lines Open could not read back.
	skipped int
}

// Open opens the log at path, creating it (0600) when missing, and loads
// the newest max events it holds (max zero or less means DefaultMax).
// Lines that are not a valid event are skipped (Skipped counts them) and
// dropped from the file, as are events past max. A file that group or
// others may read is refused: events name identities and addresses.
func Open(path string, max int) (*Log, error) {
	if max <= 0 {
		max = DefaultMax
	}
	l := &Log{path: path, max: max}
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("eventlog: %w", err)
	default:
		fi, err := os.Stat(path)
		if err != nil {
			return nil, fmt.Errorf("eventlog: %w", err)
		}
		if err := fsutil.CheckPrivate(path, fi.Mode()); err != nil {
			return nil, fmt.Errorf("eventlog: %w", err)
		}
	}
	var lines int
	l.events, lines, l.skipped = parse(data, max)
	if lines != len(l.events) {
		// Rewrite without the bad lines and the events past max.
		if err := l.rewriteLocked(); err != nil {
			return nil, err
		}
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("eventlog: %w", err)
	}
	l.f, l.lines = f, len(l.events)
	return l, nil
}

// parse reads the events of data, the newest max of them, and says how
// many lines it held and how many of them were skipped.
func parse(data []byte, max int) (events []insights.Event, lines, skipped int) {
	for len(data) > 0 {
		line := data
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line, data = data[:i], data[i+1:]
		} else {
			data = nil
		}
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		lines++
		if len(line) >= MaxLine {
			skipped++
			continue
		}
		e, err := decode(line)
		if err != nil {
			skipped++
			continue
		}
		events = append(events, e)
		if len(events) > 2*max {
			events = slices.Delete(events, 0, len(events)-max)
		}
	}
	if len(events) > max {
		events = slices.Delete(events, 0, len(events)-max)
	}
	return events, lines, skipped
}

// decode parses and checks one line.
func decode(line []byte) (insights.Event, error) {
	var e insights.Event
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil {
		return e, err
	}
	if dec.More() {
		return e, errors.New("more than one value on the line")
	}
	return e, Validate(e)
}

// Validate reports what makes e unfit for the log.
func Validate(e insights.Event) error {
	if len(e.ID) != 16 || !isLowerHex(e.ID) {
		return fmt.Errorf("id %q: want 16 lower-case hexadecimal digits", e.ID)
	}
	if e.Time.IsZero() {
		return errors.New("time is required")
	}
	if y := e.Time.Year(); y < 1 || y > 9999 {
		return fmt.Errorf("time %v: want a year from 1 to 9999", e.Time)
	}
	if !slices.Contains(insights.Detections, e.Detection) {
		return fmt.Errorf("detection %q is not one of %v", e.Detection, insights.Detections)
	}
	switch e.Severity {
	case insights.SeverityLow, insights.SeverityMedium, insights.SeverityHigh, insights.SeverityCritical:
	default:
		return fmt.Errorf("severity %q: want low, medium, high or critical", e.Severity)
	}
	switch e.Action {
	case insights.ActionAlert, insights.ActionQuarantine:
	default:
		return fmt.Errorf("action %q: want Alert or Quarantine", e.Action)
	}
	return nil
}

func isLowerHex(s string) bool {
	for _, c := range s {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// Skipped is how many lines of the file Open could not read back.
func (l *Log) Skipped() int { return l.skipped }

// Len is how many events the log holds.
func (l *Log) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.events)
}

// Append adds e to the log and its file. When the file holds a good deal
// more than max events (an eighth more), it is rewritten with the newest
// max; the log itself never holds more than max.
func (l *Log) Append(e insights.Event) error {
	if err := Validate(e); err != nil {
		return fmt.Errorf("eventlog: %w", err)
	}
	line, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("eventlog: %w", err)
	}
	if len(line) >= MaxLine {
		return fmt.Errorf("eventlog: event %s is %d bytes, more than %d", e.ID, len(line), MaxLine)
	}
	line = append(line, '\n')
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return errors.New("eventlog: log closed")
	}
	if _, err := l.f.Write(line); err != nil {
		return fmt.Errorf("eventlog: %w", err)
	}
	l.lines++
	l.events = append(l.events, e)
	if len(l.events) > l.max {
		l.events = slices.Delete(l.events, 0, len(l.events)-l.max)
	}
	if l.lines > l.max+max(l.max/8, 1) {
		if err := l.compactLocked(); err != nil {
			return err
		}
	}
	return nil
}

// compactLocked rewrites the file with the events held and reopens it.
func (l *Log) compactLocked() error {
	if err := l.rewriteLocked(); err != nil {
		return err
	}
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("eventlog: %w", err)
	}
	_ = l.f.Close()
	l.f, l.lines = f, len(l.events)
	return nil
}

// rewriteLocked replaces the file, atomically, with the events held.
func (l *Log) rewriteLocked() error {
	var b bytes.Buffer
	for _, e := range l.events {
		line, err := json.Marshal(e)
		if err != nil {
			return fmt.Errorf("eventlog: %w", err)
		}
		b.Write(line)
		b.WriteByte('\n')
	}
	if err := fsutil.WriteFileAtomic(l.path, b.Bytes(), 0o600); err != nil {
		return fmt.Errorf("eventlog: %w", err)
	}
	return nil
}

// List returns the events q selects, newest first.
func (l *Log) List(q Query) []insights.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := []insights.Event{}
	for i := len(l.events) - 1; i >= 0; i-- {
		e := l.events[i]
		if !q.Since.IsZero() && e.Time.Before(q.Since) {
			continue
		}
		if q.Detection != "" && e.Detection != q.Detection {
			continue
		}
		out = append(out, e)
		if q.Limit > 0 && len(out) == q.Limit {
			break
		}
	}
	return out
}

// Close closes the file; later Appends fail. Idempotent.
func (l *Log) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	if err != nil {
		return fmt.Errorf("eventlog: %w", err)
	}
	return nil
}
