package endpoint

import (
	"net/http/httptest"
	"testing"
)

func TestStripTicket(t *testing.T) {
	tests := []struct {
		name, target, wantQuery, wantURI string
	}{
		{"only ticket", "/events?ticket=abc", "", "/events"},
		{"kept order", "/events?a=1&ticket=abc&b=x%20y", "a=1&b=x%20y", "/events?a=1&b=x%20y"},
		{"escaped key", "/events?%74icket=abc&c=2", "c=2", "/events?c=2"},
		{"repeated", "/events?ticket=a&ticket=b&c=3", "c=3", "/events?c=3"},
		{"other names", "/events?tickets=1&my_ticket=2", "tickets=1&my_ticket=2", "/events?tickets=1&my_ticket=2"},
		{"no query", "/events", "", "/events"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", tc.target, nil)
			stripTicket(r)
			if r.URL.RawQuery != tc.wantQuery || r.RequestURI != tc.wantURI {
				t.Fatalf("query %q, RequestURI %q; want %q, %q", r.URL.RawQuery, r.RequestURI, tc.wantQuery, tc.wantURI)
			}
		})
	}
}
