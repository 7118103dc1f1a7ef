package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampart-mesh/rampart/internal/controller"
	"github.com/rampart-mesh/rampart/internal/identity"
	"github.com/rampart-mesh/rampart/internal/telemetry/graph"
)

// trafficFlags are the flags `rampart stat` and `rampart edges` share.
type trafficFlags struct {
	admin     string
	namespace string
	window    string
	output    string
}

func (f *trafficFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.admin, "controller-admin", controller.DefaultAdminListen, "the controller's admin address (its --admin-listen)")
	fl.StringVarP(&f.namespace, "namespace", "n", "", "only this namespace")
	fl.StringVar(&f.window, "window", "1m", "how far back to look: 15s to 1m in steps of 5s, or whole minutes up to 10m")
	fl.StringVarP(&f.output, "output", "o", "table", "table or json (the controller's JSON as is)")
}

// query checks the flags and the optional "namespace/workload" argument
// and returns the query of the controller's traffic API.
func (f *trafficFlags) query(cmd string, args []string) (url.Values, error) {
	if f.output != "table" && f.output != "json" {
		return nil, fmt.Errorf("%s: -o %q: want table or json", cmd, f.output)
	}
	if _, err := graph.ParseWindow(f.window); err != nil {
		return nil, fmt.Errorf("%s: --window: %w", cmd, err)
	}
	q := url.Values{"window": {f.window}}
	ns := f.namespace
	if len(args) == 1 {
		argNS, name, ok := strings.Cut(args[0], "/")
		if !ok || identity.ValidateName(argNS) != nil || identity.ValidateName(name) != nil {
			return nil, fmt.Errorf("%s: %q: want namespace/workload, such as shop/web (or --namespace for a whole namespace)", cmd, args[0])
		}
		if ns != "" && ns != argNS {
			return nil, fmt.Errorf("%s: --namespace %s and %s disagree", cmd, ns, args[0])
		}
		ns = argNS
		q.Set("workload", name)
	}
	if ns != "" {
		if err := identity.ValidateName(ns); err != nil {
			return nil, fmt.Errorf("%s: --namespace %q: %w", cmd, ns, err)
		}
		q.Set("namespace", ns)
	}
	return q, nil
}

// fetchTraffic reads path of the controller's traffic API. An answer that
// is not 200 becomes an error carrying the controller's message.
func fetchTraffic(ctx context.Context, cmd, admin, path string, q url.Values) ([]byte, error) {
	u := admin
	if !strings.Contains(u, "://") {
		u = "http://" + u
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(u, "/")+path+"?"+q.Encode(), nil)
	if err != nil {
		return nil, fmt.Errorf("%s: --controller-admin %q: %w", cmd, admin, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s: %w; is the controller running with --admin-listen %s?", cmd, err, admin)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cmd, err)
	}
	if resp.StatusCode != http.StatusOK {
		var e graph.ErrorResponse
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			return nil, fmt.Errorf("%s: %s", cmd, e.Error)
		}
		return nil, fmt.Errorf("%s: %s answered %s", cmd, req.URL.Redacted(), resp.Status)
	}
	return body, nil
}

func newStatCommand() *cobra.Command {
	var f trafficFlags
	cmd := &cobra.Command{
		Use:   "stat [namespace/workload]",
		Short: "Show each workload's golden metrics, live",
		Long: `Show each workload's traffic over the last minute (--window), from the
reports its proxies send the controller: requests per second, success rate,
latency percentiles and the share of requests over mutual TLS for what it
served (inbound), denials, and what it sent (outbound). Workloads that
reported in the last 10 minutes are listed, one row per workload name and
service account (two service accounts of a namespace may register the same
name; their numbers are never mixed); "-" means no requests.`,
		Example: `  rampart stat --controller-admin 127.0.0.1:15014
  rampart stat shop/web --window 10m
  rampart stat -n shop -o json`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			q, err := f.query("stat", args)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
			defer cancel()
			body, err := fetchTraffic(ctx, "stat", f.admin, "/api/v1/stat", q)
			if err != nil {
				return err
			}
			if f.output == "json" {
				_, err := cmd.OutOrStdout().Write(body)
				return err
			}
			var resp graph.StatResponse
			if err := json.Unmarshal(body, &resp); err != nil {
				return fmt.Errorf("stat: the controller's answer: %w", err)
			}
			printStat(cmd.OutOrStdout(), resp)
			return nil
		},
	}
	f.register(cmd)
	return cmd
}

// printStat renders the workloads as an aligned table.
func printStat(w io.Writer, resp graph.StatResponse) {
	if len(resp.Workloads) == 0 {
		fmt.Fprintln(w, "No workload reported traffic in the last 10 minutes.")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAMESPACE\tWORKLOAD\tSERVICE ACCOUNT\tINSTANCES\tRPS\tSUCCESS\tP50\tP95\tP99\tMTLS\tDENIED\tOUT RPS\tOUT SUCCESS")
	for _, s := range resp.Workloads {
		in, out := s.Inbound, s.Outbound
		p50, p95, p99 := "-", "-", "-"
		if l := in.LatencyMs; l != nil {
			p50, p95, p99 = millis(l.P50), millis(l.P95), millis(l.P99)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n",
			s.Namespace, s.Name, serviceAccount(s.Identities), s.Instances,
			rps(in), percent(in.SuccessRate), p50, p95, p99, percent(in.MTLSShare), in.Denied,
			rps(out), percent(out.SuccessRate))
	}
	tw.Flush()
	fmt.Fprintf(w, "\nOver the last %s; RPS, SUCCESS, latency, MTLS and DENIED: what the workload served; OUT: what it sent.\n",
		humanWindow(resp.WindowSeconds))
}

// serviceAccount is the service account of a row's identity; "-" when it
// has none that is a workload identity.
func serviceAccount(ids []string) string {
	if len(ids) == 0 {
		return "-"
	}
	id, err := spiffeid.FromString(ids[0])
	if err != nil {
		return "-"
	}
	_, sa, err := identity.ParseWorkloadID(id)
	if err != nil {
		return "-"
	}
	return sa
}

// rps formats a request rate with one decimal; "-" without requests.
func rps(t graph.Traffic) string {
	if t.Requests == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f", t.RequestsPerSecond)
}

// percent formats a share (0 to 1) as a percentage with one decimal,
// rounded down so that 99.96% never shows as 100.0%; "-" for none.
func percent(v *float64) string {
	if v == nil {
		return "-"
	}
	return fmt.Sprintf("%.1f%%", math.Floor(*v*1000)/10)
}

// millis formats a latency in milliseconds: three significant digits
// below a second, seconds with two decimals above.
func millis(ms float64) string {
	switch {
	case ms >= 1000:
		return fmt.Sprintf("%.2fs", ms/1000)
	case ms >= 100:
		return fmt.Sprintf("%.0fms", ms)
	case ms >= 10:
		return fmt.Sprintf("%.1fms", ms)
	}
	return fmt.Sprintf("%.2fms", ms)
}

func humanWindow(seconds float64) string {
	d := time.Duration(seconds * float64(time.Second))
	if d%time.Minute == 0 {
		n := int(d / time.Minute)
		if n == 1 {
			return "minute"
		}
		return fmt.Sprintf("%d minutes", n)
	}
	return fmt.Sprintf("%d seconds", int(d/time.Second))
}
