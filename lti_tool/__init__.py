"""lti_tool"""
