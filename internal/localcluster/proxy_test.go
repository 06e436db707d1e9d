package localcluster

import (
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// A connection accepted just before Cut, and dialled through after it, is
// closed rather than carried through the outage, and Close does not wait
// for it.
func TestProxyCutClosesConnectionAcceptedBeforeIt(t *testing.T) {
	target := echoServer(t)
	dialing, cut := make(chan struct{}), make(chan struct{})
	p, err := newTCPProxy(target, func(network, addr string) (net.Conn, error) {
		close(dialing)
		<-cut
		return net.Dial(network, addr)
	})
	if err != nil {
		t.Fatal(err)
	}
	client, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	<-dialing
	p.Cut()
	close(cut)

	if err := client.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	_, _ = client.Write([]byte("x")) // may fail already: the proxy closed it
	n, err := client.Read(make([]byte, 1))
	if n != 0 || err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read through a cut proxy = %d bytes, %v; want the connection closed", n, err)
	}

	closed := make(chan struct{})
	go func() { p.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close still waiting 5s after Cut")
	}
}

// echoServer serves TCP on a free loopback port, echoing what it reads.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}
