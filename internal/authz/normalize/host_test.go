package normalize

import (
	"strings"
	"testing"
)

func TestHost(t *testing.T) {
	tests := []struct {
		in, want string
		err      error
	}{
		{in: "example.com", want: "example.com"},
		{in: "Example.COM", want: "example.com"},
		{in: "example.com.", want: "example.com"},
		{in: "EXAMPLE.com.:8080", want: "example.com:8080"},
		{in: "example.com:443", want: "example.com:443"},
		{in: "example.com:", want: "example.com"},
		{in: "orders", want: "orders"},
		{in: "orders.shop.svc.cluster.local", want: "orders.shop.svc.cluster.local"},
		{in: "my_host-1.example", want: "my_host-1.example"},
		{in: "xn--caf-dma.example", want: "xn--caf-dma.example"},
		{in: "10.0.0.1", want: "10.0.0.1"},
		{in: "10.0.0.1:80", want: "10.0.0.1:80"},
		{in: "[::1]", want: "[::1]"},
		{in: "[::1]:8080", want: "[::1]:8080"},
		{in: "[FD00:0:0::1]:8080", want: "[fd00::1]:8080"},
		{in: "[::ffff:10.0.0.1]", want: "[::ffff:10.0.0.1]"},
		{in: strings.Repeat("a", 63) + ".com", want: strings.Repeat("a", 63) + ".com"},

		{in: "", err: errEmptyHost},
		{in: ".", err: errEmptyHost},
		{in: ":80", err: errEmptyHost},
		{in: "example.com..", err: errHostTrailDots},
		{in: "a..b", err: errHostLabel},
		{in: ".a", err: errHostLabel},
		{in: strings.Repeat("a", 64) + ".com", err: errHostLabel},
		{in: "exa mple.com", err: errHostChar},
		{in: "example.com\x00", err: errHostChar},
		{in: "ex%41mple.com", err: errHostChar},
		{in: "café.example", err: errHostChar},
		{in: "*.example.com", err: errHostChar},
		{in: "user@example.com", err: errHostUserinfo},
		{in: "example.com:0", err: errHostPort},
		{in: "example.com:080", err: errHostPort},
		{in: "example.com:65536", err: errHostPort},
		{in: "example.com:123456", err: errHostPort},
		{in: "example.com:8o", err: errHostPort},
		{in: "example.com:80:80", err: errHostChar},
		{in: "127.1", err: errHostIPv4},
		{in: "0177.0.0.1", err: errHostIPv4},
		{in: "1.2.3.4.5", err: errHostIPv4},
		{in: "[::1", err: errHostIPv6},
		{in: "[fe80::1%eth0]", err: errHostIPv6},
		{in: "[10.0.0.1]", err: errHostIPv6},
		{in: "[::1]x", err: errHostIPv6},
		{in: strings.Repeat("a.", 131), err: errHostTooLong},
	}
	for _, tt := range tests {
		got, err := Host(tt.in)
		if err != tt.err || got != tt.want {
			t.Errorf("Host(%q) = %q, %v; want %q, %v", tt.in, got, err, tt.want, tt.err)
			continue
		}
		if err != nil {
			continue
		}
		if IsHost(tt.in) != (tt.in == tt.want) {
			t.Errorf("IsHost(%q) = %v, want %v", tt.in, IsHost(tt.in), tt.in == tt.want)
		}
		if again, err := Host(got); err != nil || again != got {
			t.Errorf("Host(Host(%q)) = %q, %v; want %q (idempotent)", tt.in, again, err, got)
		}
	}
}

func TestSplitHostPort(t *testing.T) {
	for _, tt := range []struct{ in, name, port string }{
		{"example.com", "example.com", ""},
		{"example.com:8080", "example.com", "8080"},
		{"[::1]", "[::1]", ""},
		{"[::1]:80", "[::1]", "80"},
	} {
		name, port := SplitHostPort(tt.in)
		if name != tt.name || port != tt.port {
			t.Errorf("SplitHostPort(%q) = %q, %q; want %q, %q", tt.in, name, port, tt.name, tt.port)
		}
		if StripPort(tt.in) != tt.name {
			t.Errorf("StripPort(%q) = %q", tt.in, StripPort(tt.in))
		}
	}
}

func TestRequestHost(t *testing.T) {
	tests := []struct {
		authority, host, want string
		err                   error
	}{
		{authority: "example.com", want: "example.com"},
		{host: "Example.com", want: "example.com"},
		{authority: "example.com", host: "EXAMPLE.com.", want: "example.com"},
		{authority: "example.com:80", host: "example.com:80", want: "example.com:80"},
		{err: errEmptyHost},
		{authority: "example.com", host: "admin.example.com", err: errHostsDiffer},
		{authority: "example.com", host: "example.com:80", err: errHostsDiffer},
		{authority: "a b", host: "example.com", err: errHostChar},
		{authority: "example.com", host: "a b", err: errHostChar},
	}
	for _, tt := range tests {
		got, err := RequestHost(tt.authority, tt.host)
		if err != tt.err || got != tt.want {
			t.Errorf("RequestHost(%q, %q) = %q, %v; want %q, %v", tt.authority, tt.host, got, err, tt.want, tt.err)
		}
	}
}

func TestHostDoesNotAllocateWhenNormal(t *testing.T) {
	for _, h := range []string{"example.com", "orders.shop:8080", "10.0.0.1"} {
		if n := testing.AllocsPerRun(100, func() { _, _ = Host(h) }); n != 0 {
			t.Errorf("Host(%q) allocates %v times", h, n)
		}
	}
}
