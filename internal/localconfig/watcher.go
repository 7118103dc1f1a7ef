package localconfig

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
)

// DefaultDebounce is how long a Watcher waits for a directory to stay quiet
// before it reloads it.
const DefaultDebounce = 200 * time.Millisecond

// maxLoggedProblems is how many problems of a failed reload are logged one
// by one; OnError gets them all.
const maxLoggedProblems = 20

// WatcherConfig configures a Watcher.
type WatcherConfig struct {
	// Dir is the config directory. Required.
	Dir string
	// Logger receives reload results. Nil discards them.
	Logger *slog.Logger
	// Debounce is how long the directory must stay quiet after a change
	// before it is reloaded, so that an editor's or a deployment's
	// several writes make one reload. Zero means DefaultDebounce.
	Debounce time.Duration
	// OnChange, if set, is called with the new Resources after every
	// successful reload, and once when Run starts with those in force.
	// It must not modify them. It is called from Run's goroutine, never
	// concurrently with itself or OnError.
	OnChange func(*Resources)
	// OnError, if set, is called when a reload fails (with a *LoadError
	// when the files have problems). The previous Resources stay in force
	// and OnChange is not called. It is called from Run's goroutine.
	OnError func(error)
}

// Validate reports whether c can make a Watcher.
func (c *WatcherConfig) Validate() error {
	if c.Dir == "" {
		return errors.New("localconfig: watcher config: Dir is required")
	}
	if c.Debounce < 0 {
		return fmt.Errorf("localconfig: watcher config: Debounce %v is negative", c.Debounce)
	}
	return nil
}

// Watcher keeps the Resources of a config directory current: Run reloads
// the directory when its files change, and a reload that fails leaves the
// last good Resources in force.
type Watcher struct {
	dir      string
	log      *slog.Logger
	debounce time.Duration
	onChange func(*Resources)
	onError  func(error)

	current atomic.Pointer[Resources]
}

// NewWatcher loads cfg.Dir and returns a Watcher holding its Resources. It
// fails if the directory does not load, so that a controller does not
// start on a broken config.
func NewWatcher(cfg WatcherConfig) (*Watcher, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	w := &Watcher{
		dir:      cfg.Dir,
		log:      cfg.Logger,
		debounce: cfg.Debounce,
		onChange: cfg.OnChange,
		onError:  cfg.OnError,
	}
	if w.log == nil {
		w.log = slog.New(slog.DiscardHandler)
	}
	if w.debounce == 0 {
		w.debounce = DefaultDebounce
	}
	if w.onChange == nil {
		w.onChange = func(*Resources) {}
	}
	if w.onError == nil {
		w.onError = func(error) {}
	}
	res, err := Load(cfg.Dir)
	var le *LoadError
	if errors.As(err, &le) {
		return nil, fmt.Errorf("localconfig: loading %s: %w", cfg.Dir, err)
	}
	if err != nil {
		return nil, err // it names the directory
	}
	w.current.Store(res)
	w.log.Debug("local config loaded", "dir", w.dir, "services", len(res.Services), "workloads", len(res.Workloads), "routes", len(res.HTTPRoutes))
	return w, nil
}

// Current returns the Resources in force: those of the last successful
// load. The caller must not modify them.
func (w *Watcher) Current() *Resources {
	return w.current.Load()
}

// Run watches the directory and reloads it, debounced, when a config file
// in it is created, written, removed or renamed. It watches the directory
// rather than the files, so editors that save by renaming a new file over
// the old one, and Kubernetes ConfigMap volumes, which swap a hidden
// symbolic link, are seen.
//
// Run first loads the directory again, catching changes made since
// NewWatcher, and calls OnChange with the Resources in force: the same
// pointer Current returned if nothing changed. It returns nil when ctx is
// done, and an error if the directory cannot be watched or is removed.
// Call it once.
func (w *Watcher) Run(ctx context.Context) error {
	fw, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("localconfig: watching %s: %w", w.dir, err)
	}
	defer fw.Close()
	if err := fw.Add(w.dir); err != nil {
		return fmt.Errorf("localconfig: watching %s: %w", w.dir, err)
	}

	w.start()

	timer := time.NewTimer(w.debounce)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-fw.Events:
			if !ok {
				return fmt.Errorf("localconfig: watching %s: fsnotify stopped", w.dir)
			}
			if filepath.Clean(ev.Name) == filepath.Clean(w.dir) && ev.Has(fsnotify.Remove|fsnotify.Rename) {
				err := fmt.Errorf("localconfig: config directory %s was removed or renamed: changes are no longer seen; restart once it is back", w.dir)
				w.log.Error("local config directory gone", "dir", w.dir)
				w.onError(err)
				return err
			}
			if !ev.Has(fsnotify.Create|fsnotify.Write|fsnotify.Remove|fsnotify.Rename) || !affectsConfig(filepath.Base(ev.Name)) {
				continue
			}
			w.log.Debug("local config changed", "file", ev.Name, "op", ev.Op.String())
			timer.Reset(w.debounce)
		case err, ok := <-fw.Errors:
			if !ok {
				return fmt.Errorf("localconfig: watching %s: fsnotify stopped", w.dir)
			}
			// Events may have been lost (a queue overflow, say): reload to
			// be sure.
			w.log.Warn("local config watch error; reloading", "dir", w.dir, "error", err)
			timer.Reset(w.debounce)
		case <-timer.C:
			if err := w.reload(); err != nil {
				w.onError(err)
			}
		}
	}
}

// affectsConfig reports whether a change to the directory entry called
// name can change what Load returns: a config file, or one of the hidden
// "..data" entries through which a Kubernetes ConfigMap volume swaps all
// its files at once. Editors' swap and backup files are ignored.
func affectsConfig(name string) bool {
	return isConfigFile(name) || strings.HasPrefix(name, "..")
}

// start delivers the Resources in force when Run starts. The directory
// was not watched between NewWatcher and Run, so it is loaded again: if it
// has not changed, OnChange gets the very Resources that Current returned
// so far; if it has, the new ones; if it is now broken, the ones in force,
// and OnError says why the new ones are not.
func (w *Watcher) start() {
	res, err := Load(w.dir)
	switch {
	case err != nil:
		w.logFailure(err)
		w.onChange(w.Current())
		w.onError(err)
	case reflect.DeepEqual(res, w.Current()):
		w.onChange(w.Current())
	default:
		w.current.Store(res)
		w.log.Debug("local config reloaded", "dir", w.dir, "services", len(res.Services), "workloads", len(res.Workloads), "routes", len(res.HTTPRoutes))
		w.onChange(res)
	}
}

// reload loads the directory. On success it makes the result current and
// calls OnChange; on failure it logs the problems and returns the error,
// leaving the current Resources in force.
func (w *Watcher) reload() error {
	res, err := Load(w.dir)
	if err != nil {
		w.logFailure(err)
		return err
	}
	w.current.Store(res)
	w.log.Debug("local config reloaded", "dir", w.dir, "services", len(res.Services), "workloads", len(res.Workloads), "routes", len(res.HTTPRoutes))
	w.onChange(res)
	return nil
}

func (w *Watcher) logFailure(err error) {
	var le *LoadError
	if !errors.As(err, &le) {
		w.log.Error("local config reload failed; keeping the last good config", "dir", w.dir, "error", err)
		return
	}
	w.log.Error("local config reload failed; keeping the last good config", "dir", w.dir, "problems", len(le.Problems))
	for i, p := range le.Problems {
		if i == maxLoggedProblems {
			w.log.Error("local config problems not logged", "dir", w.dir, "count", len(le.Problems)-i)
			break
		}
		// "problem", not "msg", which would clash with the record's message.
		w.log.Error("local config problem", "file", p.File, "line", p.Line, "problem", p.Msg)
	}
}
