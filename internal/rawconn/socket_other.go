//go:build !linux

package rawconn

import (
	"crypto/tls"
	"net"
)

// Socket is written by its goroutine only, off Linux: WrapSocket never
// makes one.
type Socket struct{ net.Conn }

const maxSealed = 16 << 10

// WrapSocket returns c: off Linux, the fan-out writes no TLS connection.
func WrapSocket(c net.Conn) net.Conn { return c }

func socketOf(net.Conn) (*tls.Conn, *Socket) { return nil, nil }

func (*Socket) own() bool     { return false }
func (*Socket) Pending() bool { return false }
func (*Socket) Flush() error  { return nil }
