package controller

import (
	"context"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
)

// watchStateFile calls reload when the file name of the state directory
// changes (at once with file-system notifications), every CAPollInterval in
// any case, when wake delivers, and at the time reload last returned (zero:
// none), until ctx ends. what names the file in logs.
func (c *Controller) watchStateFile(ctx context.Context, name, what string, wake <-chan struct{}, reload func() time.Time) error {
	var events <-chan fsnotify.Event
	var errs <-chan error
	w, err := fsnotify.NewWatcher()
	if err == nil {
		if err = w.Add(c.cfg.StateDir); err != nil {
			w.Close()
		}
	}
	if err != nil {
		c.logger.Warn("cannot watch the state directory; reading the "+what+" every CA poll interval only",
			"dir", c.cfg.StateDir, "interval", c.cfg.CAPollInterval.String(), "error", err.Error())
	} else {
		defer w.Close()
		events, errs = w.Events, w.Errors
	}
	poll := time.NewTicker(c.cfg.CAPollInterval)
	defer poll.Stop()
	at := time.NewTimer(0)
	defer at.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			if filepath.Base(ev.Name) != name {
				continue
			}
		case err, ok := <-errs:
			if !ok {
				errs = nil
				continue
			}
			c.logger.Warn("state directory watch error; the CA poll interval still applies", "error", err.Error())
			continue
		case <-poll.C:
		case <-at.C:
		case <-wake:
		}
		next := reload()
		at.Stop()
		if !next.IsZero() {
			at.Reset(max(next.Sub(c.cfg.Now()), 0))
		}
	}
}
