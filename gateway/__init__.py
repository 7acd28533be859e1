"""The OpenAI-compatible HTTP gateway: Chat Completions and Completions over the scheduler's
gRPC API, keeping a request paused on the server across the HTTP turns of a tool call.

Modules, one concept each:
    main            the `infercept-gateway` command: flags, uvicorn
    config          GatewayConfig
    app             the FastAPI routes, streaming (server-sent events), start-up
    openai_schema   request bodies, validated; the `infercept` extension (scripted calls)
    errors          GatewayError: OpenAI-shaped errors and HTTP statuses of gRPC codes
    model_assets    the model's name, tokenizer and chat template; conversations as token ids
    chat_template   the scheduler's chat-template renderer, and the ChatML fallback
    tool_calls      the scheduler's interceptions (its Hermes call detector) as OpenAI tool calls
    turns           one HTTP turn: resume a paused request or start one; read to a call or the end
    grpc_session    one gRPC Session stream held across turns
    pauses          the table of paused turns, matched by context token ids, with a time-to-live
    holdback        which streamed text is safe to show (not part of a marker)
    responses       OpenAI response bodies and stream chunks
    background      a gateway served from a thread (tests, benchmarks, the demo)
    process         the gateway as a child process of `infercept serve`
    demo            real tools through the gateway with the openai package
"""
