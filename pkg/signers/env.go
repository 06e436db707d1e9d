package signers

import (
	"crypto/rand"
	"fmt"
	"io"
	"math/big"
	"time"
)

// Clock tells the time. k8s.io/utils/clock clocks satisfy it.
type Clock interface{ Now() time.Time }

// Env is what building and signing certificates takes from the outside
// world. The zero value uses the real clock, crypto/rand and random serials.
type Env struct {
	Clock Clock
	// Rand feeds key generation and signatures.
	Rand io.Reader
	// Serial returns the next serial number; nil means 128 random bits.
	Serial func() (*big.Int, error)
}

func (e Env) now() time.Time {
	if e.Clock == nil {
		return time.Now()
	}
	return e.Clock.Now()
}

func (e Env) rand() io.Reader {
	if e.Rand == nil {
		return rand.Reader
	}
	return e.Rand
}

// serial returns a positive serial of at most 20 octets (RFC 5280 4.1.2.2).
func (e Env) serial() (*big.Int, error) {
	if e.Serial != nil {
		return e.Serial()
	}
	s, err := rand.Int(e.rand(), new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("generating serial number: %w", err)
	}
	return s.Add(s, big.NewInt(1)), nil
}
