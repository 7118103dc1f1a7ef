package tap

import (
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	meshv1 "github.com/rampart-mesh/rampart/internal/meshapi/v1"
)

// Bounds on one tap, whatever the controller asks.
const (
	// MaxEvents bounds the events of one tap.
	MaxEvents = 10_000
	// MaxDuration bounds how long a tap lasts.
	MaxDuration = 10 * time.Minute
	// maxIDLen bounds a tap's id; maxPrefixLen a path prefix.
	maxIDLen     = 64
	maxPrefixLen = 256
	maxMethodLen = 16
)

// Filter is a validated TapFilter: which requests a tap sends. An empty
// field matches any request.
type Filter struct {
	Method      string
	PathPrefix  string
	Source      string
	StatusClass int
}

// Match reports whether a request head matches f.
func (f *Filter) Match(method, path, source string, status int) bool {
	return (f.Method == "" || f.Method == method) &&
		(f.PathPrefix == "" || strings.HasPrefix(path, f.PathPrefix)) &&
		(f.Source == "" || f.Source == source) &&
		(f.StatusClass == 0 || status/100 == f.StatusClass)
}

// Spec is a validated start command.
type Spec struct {
	ID        string
	Filter    Filter
	MaxEvents int
	Duration  time.Duration
}

// FromProto validates a start command from the controller; the error
// names the field at fault.
func FromProto(c *meshv1.TapCommand) (Spec, error) {
	var s Spec
	if err := validID(c.GetId()); err != nil {
		return s, err
	}
	s.ID = c.GetId()
	f := c.GetFilter()
	if m := f.GetMethod(); m != "" {
		if len(m) > maxMethodLen || strings.ToUpper(m) != m || strings.IndexFunc(m, func(r rune) bool { return r < 'A' || r > 'Z' }) >= 0 {
			return s, fmt.Errorf("tap: filter.method %q: want an HTTP method in upper case", m)
		}
		s.Filter.Method = m
	}
	if p := f.GetPathPrefix(); p != "" {
		if !strings.HasPrefix(p, "/") || len(p) > maxPrefixLen || !utf8.ValidString(p) || strings.ContainsAny(p, "?#") {
			return s, fmt.Errorf("tap: filter.path_prefix %q: want a path starting with / of at most %d bytes, without ? or #", p, maxPrefixLen)
		}
		s.Filter.PathPrefix = p
	}
	if src := f.GetSource(); src != "" {
		if _, err := spiffeid.FromString(src); err != nil {
			return s, fmt.Errorf("tap: filter.source %q: %w", src, err)
		}
		s.Filter.Source = src
	}
	if sc := f.GetStatusClass(); sc > 5 {
		return s, fmt.Errorf("tap: filter.status_class %d: want 1 to 5, or 0 for any", sc)
	} else {
		s.Filter.StatusClass = int(sc)
	}
	if n := c.GetMaxEvents(); n == 0 || n > MaxEvents {
		return s, fmt.Errorf("tap: max_events %d: want 1 to %d", n, MaxEvents)
	} else {
		s.MaxEvents = int(n)
	}
	if c.GetDuration() == nil {
		return s, errors.New("tap: duration is required")
	}
	if err := c.GetDuration().CheckValid(); err != nil {
		return s, fmt.Errorf("tap: duration: %w", err)
	}
	if d := c.GetDuration().AsDuration(); d <= 0 || d > MaxDuration {
		return s, fmt.Errorf("tap: duration %v: want more than 0 and at most %v", d, MaxDuration)
	} else {
		s.Duration = d
	}
	return s, nil
}

func validID(id string) error {
	if id == "" || len(id) > maxIDLen || strings.IndexFunc(id, func(r rune) bool {
		return (r < '0' || r > '9') && (r < 'a' || r > 'f')
	}) >= 0 {
		return fmt.Errorf("tap: id %q: want 1 to %d bytes of [0-9a-f]", id, maxIDLen)
	}
	return nil
}
