//! The driver of one ISM function (in progress).
