package graph

// The JSON documents of the controller's traffic API (GET /api/v1/stat and
// GET /api/v1/edges on its admin listener), which `rampart stat`, `rampart
// edges` and the dashboard read. Fields are only ever added.

// StatResponse is the answer of GET /api/v1/stat.
type StatResponse struct {
	// Window is the window the numbers cover, as a Go duration ("1m0s").
	Window string `json:"window"`
	// WindowSeconds is the same window in seconds.
	WindowSeconds float64        `json:"window_seconds"`
	Workloads     []WorkloadStat `json:"workloads"`
}

// EdgesResponse is the answer of GET /api/v1/edges.
type EdgesResponse struct {
	Window        string     `json:"window"`
	WindowSeconds float64    `json:"window_seconds"`
	Edges         []EdgeStat `json:"edges"`
}

// ErrorResponse is the body of every answer that is not 200.
type ErrorResponse struct {
	Error string `json:"error"`
}
