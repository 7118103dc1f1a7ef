package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/rampart-mesh/rampart/internal/controller"
	"github.com/rampart-mesh/rampart/internal/insights"
)

func newEventsCommand() *cobra.Command {
	var (
		admin, since, detection, output string
		limit                           int
	)
	cmd := &cobra.Command{
		Use:   "events",
		Short: "List the security events the controller detected",
		Long: `List the security events the controller's threat detection recorded
(new edges, rate and error spikes, denial bursts, route scans, refused
handshakes, plaintext on strict ports, changed code), newest first, from its
event log: when, which detection, its severity, the source (an identity
marked "claimed" was presented in a handshake that failed, not verified),
the destination, the action taken and what happened.`,
		Example: `  rampart events
  rampart events --since 24h --detection route_scan
  rampart events -o json --limit 1000`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			q, err := eventsQuery(since, detection, output, limit)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
			defer cancel()
			body, err := fetchTraffic(ctx, "events", admin, "/api/v1/events", q)
			if err != nil {
				return err
			}
			if output == "json" {
				_, err := cmd.OutOrStdout().Write(body)
				return err
			}
			var resp controller.EventsResponse
			if err := json.Unmarshal(body, &resp); err != nil {
				return fmt.Errorf("events: the controller's answer: %w", err)
			}
			printEvents(cmd.OutOrStdout(), resp)
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&admin, "controller-admin", controller.DefaultAdminListen, "the controller's admin address (its --admin-listen)")
	fl.StringVar(&since, "since", "1h", "how far back to look, at most 168h (7 days)")
	fl.StringVar(&detection, "detection", "", "only this detection: "+detectionNames())
	fl.IntVar(&limit, "limit", controller.DefaultEventsLimit, fmt.Sprintf("at most this many events, 1 to %d", controller.MaxEventsLimit))
	fl.StringVarP(&output, "output", "o", "table", "table or json (the controller's JSON as is)")
	return cmd
}

func detectionNames() string {
	names := make([]string, len(insights.Detections))
	for i, d := range insights.Detections {
		names[i] = string(d)
	}
	return strings.Join(names, ", ")
}

// eventsQuery checks the flags and returns the query of GET
// /api/v1/events.
func eventsQuery(since, detection, output string, limit int) (url.Values, error) {
	if output != "table" && output != "json" {
		return nil, fmt.Errorf("events: -o %q: want table or json", output)
	}
	d, err := time.ParseDuration(since)
	if err != nil || d <= 0 || d > controller.MaxEventsSince {
		return nil, fmt.Errorf("events: --since %q: want a duration from 1s to %v, such as 15m, 1h or 24h", since, controller.MaxEventsSince)
	}
	q := url.Values{"since": {since}, "limit": {strconv.Itoa(limit)}}
	if limit < 1 || limit > controller.MaxEventsLimit {
		return nil, fmt.Errorf("events: --limit %d: want 1 to %d", limit, controller.MaxEventsLimit)
	}
	if detection != "" {
		if !slices.Contains(insights.Detections, insights.Detection(detection)) {
			return nil, fmt.Errorf("events: --detection %q: want one of %s", detection, detectionNames())
		}
		q.Set("detection", detection)
	}
	return q, nil
}

// printEvents renders the events as an aligned table.
func printEvents(w io.Writer, resp controller.EventsResponse) {
	if len(resp.Events) == 0 {
		fmt.Fprintln(w, "No security events in the period.")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tDETECTION\tSEVERITY\tSOURCE\tDESTINATION\tACTION\tSUMMARY")
	for _, e := range resp.Events {
		dst := "-"
		if e.Destination != nil {
			dst = partyName(*e.Destination)
		}
		action := string(e.Action)
		if e.QuarantinedUntil != nil {
			action += " until " + e.QuarantinedUntil.UTC().Format("15:04:05")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.Time.UTC().Format("2006-01-02 15:04:05"),
			e.Detection, e.Severity, partyName(e.Source), dst, action, oneLine(e.Summary))
	}
	tw.Flush()
}

// partyName names one side of an event: its workload, or its identity,
// or its address, in that order of preference.
func partyName(p insights.Party) string {
	var s string
	switch {
	case p.Workload != "" && p.Namespace != "":
		s = p.Namespace + "/" + p.Workload
	case p.SPIFFEID != "":
		s = p.SPIFFEID
	case p.IP != "":
		s = p.IP
	default:
		return "-"
	}
	if p.Claimed {
		s += " (claimed)"
	}
	return s
}

// oneLine keeps a summary on its row of the table.
func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '\n' || r == '\r' || r == '\t' {
			return ' '
		}
		return r
	}, s)
}
