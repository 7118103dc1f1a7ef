package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/rampart-mesh/rampart/internal/controller"
	"github.com/rampart-mesh/rampart/internal/dashboard"
)

func newDashboardCommand() *cobra.Command {
	var admin string
	var noBrowser bool
	cmd := &cobra.Command{
		Use:   "dashboard",
		Short: "Open the controller's web dashboard",
		Long: `Print the address of the dashboard the controller serves on its admin
listener (--admin-listen) and open it in a browser with xdg-open when one
is available. The dashboard shows the live traffic graph with the
encryption and authorization of every edge, each workload's golden
signals, recent denials and certificate expiry, refreshed every 2 seconds.`,
		Example: `  rampart dashboard --controller-admin 127.0.0.1:15014
  rampart dashboard --controller-admin 10.0.0.5:15014 --no-browser`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			u, err := dashboardURL(admin)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
			defer cancel()
			if err := checkDashboard(ctx, u, admin); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "Rampart dashboard: %s\n", u)
			if noBrowser {
				return nil
			}
			openBrowser(out, u)
			return nil
		},
	}
	cmd.Flags().StringVar(&admin, "controller-admin", controller.DefaultAdminListen, "the controller's admin address (its --admin-listen)")
	cmd.Flags().BoolVar(&noBrowser, "no-browser", false, "print the address only; do not open a browser")
	return cmd
}

// dashboardURL is the dashboard's address on the admin listener admin
// ("host:port", or a URL with http or https).
func dashboardURL(admin string) (string, error) {
	raw := admin
	if !strings.Contains(raw, "://") {
		raw = "http://" + raw
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Port() == "" ||
		(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil {
		return "", fmt.Errorf("dashboard: --controller-admin %q: want host:port, such as 127.0.0.1:15014", admin)
	}
	u.Path = dashboard.Prefix
	return u.String(), nil
}

// checkDashboard asks the controller for the page, so that a wrong address
// is an error here rather than a browser's blank tab.
func checkDashboard(ctx context.Context, u, admin string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return fmt.Errorf("dashboard: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("dashboard: %w; is the controller running with --admin-listen %s?", err, admin)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("dashboard: %s answered %s: is %s the controller's admin listener, and the controller this version or later?", u, resp.Status, admin)
	}
	return nil
}

// openBrowser opens u with the desktop's opener when there is one and a
// display to show it on; otherwise, or when that fails, it says to open
// the address by hand. It never fails the command.
func openBrowser(out io.Writer, u string) {
	opener := "xdg-open"
	if runtime.GOOS == "darwin" {
		opener = "open"
	}
	path, err := exec.LookPath(opener)
	if err != nil {
		fmt.Fprintf(out, "No %s found: open the address in a browser.\n", opener)
		return
	}
	if runtime.GOOS != "darwin" && os.Getenv("DISPLAY") == "" && os.Getenv("WAYLAND_DISPLAY") == "" {
		fmt.Fprintln(out, "No display (DISPLAY and WAYLAND_DISPLAY are unset): open the address in a browser.")
		return
	}
	c := exec.Command(path, u)
	if err := c.Start(); err != nil {
		fmt.Fprintf(out, "%s failed (%v): open the address in a browser.\n", opener, err)
		return
	}
	// The opener hands the address to the browser and exits; it is not
	// waited for beyond a moment, so a slow one does not hold the prompt.
	done := make(chan error, 1)
	go func() { done <- c.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			fmt.Fprintf(out, "%s failed (%v): open the address in a browser.\n", opener, err)
		}
	case <-time.After(5 * time.Second):
		_ = c.Process.Release()
	}
}
