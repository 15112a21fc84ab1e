//! The SMC-D CDC message and cursor arithmetic (in progress).
