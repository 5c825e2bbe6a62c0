//! Filter configuration: raw JSON in, validated [`Config`] out, with precise errors.
