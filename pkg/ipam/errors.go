package ipam

import (
	"errors"
	"fmt"

	"github.com/containernetworking/cni/pkg/types"
)

// configError reports an invalid network configuration, naming the field
// (code 7) so an operator knows which line of the conflist to fix.
func configError(field, format string, args ...any) *types.Error {
	return types.NewError(types.ErrInvalidNetworkConfig, field+": "+fmt.Sprintf(format, args...), "")
}

// envError reports an invalid CNI_* value (code 4).
func envError(field, format string, args ...any) *types.Error {
	return types.NewError(types.ErrInvalidEnvironmentVariables, field+": "+fmt.Sprintf(format, args...), "")
}

// ioError reports a store failure (code 5); the cause goes into Details.
func ioError(what string, err error) *types.Error {
	return types.NewError(types.ErrIOFailure, "ipam store: "+what, err.Error())
}

// busyError reports a condition that may clear by itself (code 11): a full
// range or a requested address still held by another attachment.
func busyError(format string, args ...any) *types.Error {
	return types.NewError(types.ErrTryAgainLater, fmt.Sprintf(format, args...), "")
}

// asCNIError makes sure err is a *types.Error before it leaves the package:
// a typed error keeps its code, anything else gets the fallback code
// instead of skel's 999.
func asCNIError(err error, fallback uint) error {
	if err == nil {
		return nil
	}
	var te *types.Error
	if errors.As(err, &te) {
		return te
	}
	return types.NewError(fallback, err.Error(), "")
}

func isBusy(err error) bool {
	var te *types.Error
	return errors.As(err, &te) && te.Code == types.ErrTryAgainLater
}
