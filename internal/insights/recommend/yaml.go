package recommend

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/rampart-mesh/rampart/api/v1alpha1"
)

// FileName is the name of the file WriteDir-style output keeps rec in:
// "<namespace>.<name>.yaml" (names are DNS labels, without dots).
func (rec *Recommendation) FileName() string {
	return rec.Policy.Namespace + "." + rec.Policy.Name + ".yaml"
}

// YAML returns rec as one YAML document: a comment header listing the
// observed callers and the learning period, then the policy.
func (rec *Recommendation) YAML() ([]byte, error) {
	var b bytes.Buffer
	p := rec.Policy
	fmt.Fprintf(&b, "# Recommended by rampart policy recommend for %s/%s from its baseline,\n", p.Namespace, rec.Workloads[0].Workload)
	fmt.Fprintf(&b, "# learnt %s to %s", rec.LearningStarted, rec.LearningEnds)
	if rec.Learning {
		b.WriteString(" (still learning: callers and routes may be missing)")
	}
	b.WriteString(".\n")
	if mode := string(p.Spec.Mode); mode != "" {
		fmt.Fprintf(&b, "# Mode %s", mode)
		if p.Spec.Mode == v1alpha1.ModeAudit {
			b.WriteString(": the proxies record what it would deny; set mode: ENFORCE once reviewed")
		}
		b.WriteString(".\n")
	}
	allowed := map[string]bool{}
	for _, r := range p.Spec.Rules {
		for _, f := range r.From {
			for _, pr := range f.Principals {
				allowed[pr] = true
			}
		}
	}
	for _, wb := range rec.Workloads {
		fmt.Fprintf(&b, "# Callers of %s:\n", wb.SPIFFEID)
		if len(wb.Callers) == 0 {
			b.WriteString("#   none\n")
		}
		for _, c := range wb.Callers {
			who := c.SPIFFEID
			if who == "" {
				who = "plaintext"
			}
			if c.Workload != "" {
				who += " (" + c.Workload + ")"
			}
			fmt.Fprintf(&b, "#   %s: %d requests, %s to %s", who, c.Requests, formatTime(c.FirstSeen), formatTime(c.LastSeen))
			if !allowed[c.SPIFFEID] {
				b.WriteString(", not allowed")
			}
			b.WriteString("\n")
		}
	}
	doc, err := yaml.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("recommend: %s/%s: %w", p.Namespace, p.Name, err)
	}
	// ObjectMeta marshals its zero creation time as null; a manifest
	// leaves it out.
	doc = bytes.Replace(doc, []byte("  creationTimestamp: null\n"), nil, 1)
	b.Write(doc)
	return b.Bytes(), nil
}

// WriteYAML writes every policy of r to w as YAML documents separated by
// "---", in the order of r.Policies.
func (r *Result) WriteYAML(w io.Writer) error {
	for i := range r.Policies {
		doc, err := r.Policies[i].YAML()
		if err != nil {
			return err
		}
		if i > 0 {
			if _, err := io.WriteString(w, "---\n"); err != nil {
				return err
			}
		}
		if _, err := w.Write(doc); err != nil {
			return err
		}
	}
	return nil
}

// WriteWarnings writes one line per warning to w.
func (r *Result) WriteWarnings(w io.Writer) error {
	var b strings.Builder
	for _, warn := range r.Warnings {
		b.WriteString("warning: " + warn.String() + "\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func formatTime(t time.Time) string {
	if t.IsZero() {
		return "(unknown)"
	}
	return t.UTC().Format(time.RFC3339)
}
